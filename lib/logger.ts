import winston from 'winston';
import { guardLogger } from './guard';
import { LogLevel } from './levels';
import type { VectorTransportOptions } from './options';
import { type FlushResult, type TransportStats, VectorTransport } from './transport';

/** Python's level set, most severe first (winston: lower is more severe). */
export const PYTHON_LEVELS = Object.freeze({ critical: 0, error: 1, warning: 2, info: 3, debug: 4 });

const LEVEL_NAMES: Record<number, keyof typeof PYTHON_LEVELS> = {
  [LogLevel.DEBUG]: 'debug',
  [LogLevel.INFO]: 'info',
  [LogLevel.WARNING]: 'warning',
  [LogLevel.ERROR]: 'error',
  [LogLevel.CRITICAL]: 'critical',
};

export interface VectorLoggerOptions extends Omit<VectorTransportOptions, 'level'> {
  /** Lowest level logged: a {@link LogLevel} number or a level name. Default `LogLevel.DEBUG`, as LogSend. */
  level?: LogLevel | keyof typeof PYTHON_LEVELS;
  /** Merged into every record's `extra`, as winston's `defaultMeta`. */
  defaultMeta?: Record<string, unknown>;
}

/** A winston logger with Python's levels and LogSend's methods. */
export type VectorLogger = winston.Logger &
  Record<keyof typeof PYTHON_LEVELS, winston.LeveledLogMethod> & {
    readonly transport: VectorTransport;
    pendingCount(): Promise<number>;
    flush(): Promise<FlushResult>;
    stats(): Promise<TransportStats>;
    /** Ships for up to `closeTimeout` and closes the queue. Unlike winston's `close()`, it returns a promise. */
    close(): Promise<void>;
    [Symbol.asyncDispose](): Promise<void>;
  };

function levelName(level: VectorLoggerOptions['level']): keyof typeof PYTHON_LEVELS {
  if (level === undefined) return 'debug';
  if (typeof level === 'string' && level in PYTHON_LEVELS) return level as keyof typeof PYTHON_LEVELS;
  if (typeof level === 'number' && LEVEL_NAMES[level]) return LEVEL_NAMES[level]!;
  throw new RangeError(`\`level\` must be a LogLevel (10, 20, 30, 40, 50) or one of ${Object.keys(PYTHON_LEVELS).join(', ')}, got ${JSON.stringify(level)}`);
}

/**
 * LogSend's API in winston: `debug`, `info`, `warning`, `error`, `critical`, with `pendingCount()`,
 * `flush()`, `close()` and `await using`.
 */
export function createVectorLogger(options: VectorLoggerOptions): VectorLogger {
  const { level, defaultMeta, ...transportOptions } = options;
  const name = levelName(level);
  const transport = new VectorTransport(transportOptions);
  // No logger format: winston's default json() runs before any transport and throws on a throwing
  // getter; the transport serializes every record by itself, safely.
  const passThrough = winston.format((info) => info)();
  const logger = guardLogger(winston.createLogger({ levels: PYTHON_LEVELS, level: name, defaultMeta, format: passThrough, transports: [transport] }));
  const winstonClose = logger.close.bind(logger);
  let closing: Promise<void> | undefined;
  return Object.assign(logger, {
    transport,
    pendingCount: () => transport.pendingCount(),
    flush: () => transport.flush(),
    stats: () => transport.stats(),
    close: () => {
      closing ??= transport.close().then(() => {
        winstonClose();
      });
      return closing;
    },
    [Symbol.asyncDispose]: () => (logger as unknown as VectorLogger).close(),
  }) as unknown as VectorLogger;
}
