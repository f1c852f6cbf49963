import winston from 'winston';
import { guardLogger } from './guard';
import { LogLevel } from './levels';
import { LOGGER_OPTION_KEYS, refuseUnknownKeys } from './option-names';
import type { VectorTransportOptions } from './options';
import { readField } from './serialize';
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
    /** Same as `warning` (Python's `logger.warn`). */
    warn: winston.LeveledLogMethod;
    /**
     * Python's `logger.exception`: logs at `error`, with the stack of the Error passed last (or
     * first, in place of the message) in the record's `exception`. `%s` arguments and meta work as
     * in the other methods.
     */
    exception(message: unknown, ...args: unknown[]): VectorLogger;
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
  if (options !== null && typeof options === 'object') refuseUnknownKeys(options, LOGGER_OPTION_KEYS, 'createVectorLogger');
  const { level, defaultMeta, ...transportOptions } = options;
  const name = levelName(level);
  const transport = new VectorTransport(transportOptions);
  // Only splat (`%s`, `%d`, `%j`, as Python's `logger.info('user %s', name)`): winston's default
  // json() runs before any transport and throws on a throwing getter; the transport serializes
  // every record by itself, safely.
  const logger = guardLogger(
    winston.createLogger({ levels: PYTHON_LEVELS, level: name, defaultMeta, format: winston.format.splat(), transports: [transport] }),
  );
  const winstonClose = logger.close.bind(logger);
  let closing: Promise<void> | undefined;
  // On the logger, so its children (made with Object.create) log through themselves.
  const habits = {
    warn(this: winston.Logger, ...args: unknown[]) {
      return (this as unknown as Record<string, (...a: unknown[]) => unknown>).warning!.apply(this, args);
    },
    exception(this: winston.Logger, ...args: unknown[]) {
      return exception(this, args);
    },
  };
  for (const [key, fn] of Object.entries(habits)) Object.defineProperty(logger, key, { value: fn, writable: true, configurable: true });
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

function isError(value: unknown): value is Error {
  try {
    return value instanceof Error;
  } catch {
    return false;
  }
}

/** `logger.exception(message, ...args, err?)`, or `logger.exception(err, ...args)`. Never throws. */
function exception(self: winston.Logger, args: unknown[]): winston.Logger {
  const rest = [...args];
  let err: Error | undefined;
  if (rest.length > 1 && isError(rest[rest.length - 1])) err = rest.pop() as Error;
  else if (isError(rest[0])) {
    err = rest[0];
    rest[0] = readField(err, 'message');
  }
  const stack = err === undefined ? undefined : readField(err, 'stack');
  const [message = '', ...splat] = rest;
  try {
    // As its last argument, an object is meta: winston and splat merge it into the record.
    if (typeof stack === 'string') return self.log('error', message as string, ...splat, { stack });
    return splat.length === 0 ? self.log('error', message as string) : self.log('error', message as string, ...splat);
  } catch {
    // the guarded log() has already recorded what threw
    return self;
  }
}
