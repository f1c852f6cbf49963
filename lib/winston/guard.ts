import type winston from 'winston';
import { readField as read, renderMessage, safeString, toJson } from './serialize';
import { VectorTransport } from './transport';

/** triple-beam's LEVEL: the key winston's streams filter on. */
const LEVEL = Symbol.for('level');

type Fn = (...args: unknown[]) => unknown;

/**
 * Makes a winston logger's `log()` and level methods (`info`, `error`, …, also on its children)
 * never throw for what they are given. winston itself throws before any transport sees the record
 * when the meta has a getter that throws (its own `Object.assign`), and its default `json()` format
 * throws on a `toJSON` or nested getter that throws and on nesting thousands deep. Such a call is
 * logged again with every value made safe (`"[Unserializable: …]"`, `"[Object]"` below depth 10) and
 * `log_call_error` saying what threw; if even that fails, the record is counted as dropped
 * (`unserializable`) on the logger's VectorTransports. `createVectorLogger` does this for you.
 * Returns the same logger.
 */
export function guardLogger<L extends winston.Logger>(logger: L): L {
  const target = logger as unknown as Record<string, unknown>;
  for (const name of ['log', ...Object.keys(logger.levels)]) {
    const original = target[name];
    if (typeof original !== 'function' || (original as { guarded?: boolean }).guarded) continue;
    const isLog = name === 'log';
    const guarded = function (this: winston.Logger | undefined, ...args: unknown[]): unknown {
      const self = this ?? logger;
      try {
        return (original as Fn).apply(self, args);
      } catch (err) {
        if (isLog) rescue(self, logger, args.length === 1 ? read(args[0], 'level') : args[0], args.length === 1 ? args : args.slice(1), err);
        else rescue(self, logger, name, args, err);
        return self;
      }
    };
    Object.defineProperty(guarded, 'guarded', { value: true });
    Object.defineProperty(target, name, { value: guarded, writable: true, configurable: true, enumerable: false });
  }
  return logger;
}

function keysOf(obj: object): string[] {
  try {
    return Object.keys(obj);
  } catch {
    return [];
  }
}

/** The call again, with every value made safe. */
function rescue(self: winston.Logger, root: winston.Logger, level: unknown, args: unknown[], err: unknown): void {
  const levelName = typeof level === 'string' ? level : safeString(level);
  const fields: Record<string, unknown> = {};
  let message: string | undefined;
  for (const arg of args) {
    if (typeof arg === 'string' && message === undefined) {
      message = arg;
    } else if (arg !== null && typeof arg === 'object') {
      for (const key of keysOf(arg)) {
        if (key === 'level' || key === '__proto__') continue;
        const value = toJson(read(arg, key), 1);
        if (value !== undefined) fields[key] = value;
      }
    } else if (arg !== undefined && message === undefined) {
      message = renderMessage(arg);
    }
  }
  const fromMeta = fields.message;
  delete fields.message;
  const info: Record<string | symbol, unknown> = {
    ...fields,
    log_call_error: err instanceof Error ? safeString(err.message) : safeString(err),
    level: levelName,
    message: message ?? (fromMeta === undefined ? '' : renderMessage(fromMeta)),
    [LEVEL]: levelName,
  };
  try {
    (self as unknown as { _addDefaultMeta?(info: object): void })._addDefaultMeta?.(info);
  } catch {
    // a defaultMeta that throws when read: the record goes without it
  }
  try {
    self.write(info);
  } catch (again) {
    for (const t of root.transports ?? []) if (t instanceof VectorTransport) t.countDropped('unserializable', again);
  }
}
