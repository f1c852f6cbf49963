/** Nesting below this depth is written as `"[Object]"` / `"[Array]"`. */
export const MAX_DEPTH = 10;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const UNSERIALIZABLE = '[Unserializable]';

function describeThrow(err: unknown): string {
  try {
    return `[Unserializable: ${err instanceof Error ? err.message : String(err)}]`;
  } catch {
    return UNSERIALIZABLE;
  }
}

/**
 * Turns any value into plain JSON data without ever throwing, following
 * the record contract (docs/record-format.md): Errors keep name/message/stack/cause, Date → ISO,
 * BigInt → decimal, bytes → base64, Map → object, Set → array, circular → "[Circular]".
 * Returns `undefined` for what JSON leaves out (undefined, functions, symbols).
 */
export function toJson(value: unknown, depth = 0, ancestors: Set<object> = new Set()): Json | undefined {
  try {
    switch (typeof value) {
      case 'string':
      case 'boolean':
        return value;
      case 'number':
        return Number.isFinite(value) ? value : null;
      case 'bigint':
        return value.toString();
      case 'undefined':
      case 'function':
      case 'symbol':
        return undefined;
    }
    if (value === null) return null;
    const obj = value as object;
    if (ancestors.has(obj)) return '[Circular]';
    if (obj instanceof Date) return Number.isNaN(obj.getTime()) ? null : obj.toISOString();
    if (ArrayBuffer.isView(obj)) return Buffer.from(obj.buffer, obj.byteOffset, obj.byteLength).toString('base64');
    if (obj instanceof ArrayBuffer) return Buffer.from(obj).toString('base64');
    if (depth >= MAX_DEPTH) return Array.isArray(obj) ? '[Array]' : '[Object]';

    ancestors.add(obj);
    try {
      if (obj instanceof Error) return errorToJson(obj, depth, ancestors);
      if (Array.isArray(obj)) return obj.map((v) => toJson(v, depth + 1, ancestors) ?? null);
      if (obj instanceof Set) return [...obj].map((v) => toJson(v, depth + 1, ancestors) ?? null);
      if (obj instanceof Map) {
        const out: Record<string, Json> = {};
        for (const [k, v] of obj) {
          const j = toJson(v, depth + 1, ancestors);
          if (j !== undefined) out[typeof k === 'string' ? k : safeString(k)] = j;
        }
        return out;
      }
      const toJSON = (obj as { toJSON?: unknown }).toJSON;
      if (typeof toJSON === 'function') {
        const replaced: unknown = toJSON.call(obj);
        if (replaced !== obj) return toJson(replaced, depth + 1, ancestors);
      }
      return ownFields(obj, depth, ancestors);
    } finally {
      ancestors.delete(obj);
    }
  } catch (err) {
    return describeThrow(err);
  }
}

function ownFields(obj: object, depth: number, ancestors: Set<object>, skip?: Set<string>): Record<string, Json> {
  const out: Record<string, Json> = {};
  for (const key of Object.keys(obj)) {
    if (skip?.has(key)) continue;
    let j: Json | undefined;
    try {
      j = toJson((obj as Record<string, unknown>)[key], depth + 1, ancestors);
    } catch (err) {
      j = describeThrow(err);
    }
    if (j !== undefined) out[key] = j;
  }
  return out;
}

const ERROR_KEYS = new Set(['name', 'message', 'stack', 'cause', 'errors']);

function errorToJson(err: Error, depth: number, ancestors: Set<object>): Record<string, Json> {
  const out: Record<string, Json> = {
    name: safeString(err.name),
    message: safeString(err.message),
  };
  if (err.stack !== undefined) out.stack = safeString(err.stack);
  Object.assign(out, ownFields(err, depth, ancestors, ERROR_KEYS));
  if (err instanceof AggregateError && Array.isArray(err.errors)) {
    out.errors = err.errors.map((e) => toJson(e, depth + 1, ancestors) ?? null);
  }
  if ('cause' in err && err.cause !== undefined) {
    const cause = toJson(err.cause, depth + 1, ancestors);
    if (cause !== undefined) out.cause = cause;
  }
  return out;
}

/** How many more members `isPlainJson` may look at before it gives up (returns false). */
let nodesLeft = Number.POSITIVE_INFINITY;

/**
 * Limits the members `isPlainJson` looks at, in all, until `endPlainBudget()`: past `nodes` it
 * answers false and `plainBudgetSpent()` is true (the values are too large to check cheaply first).
 */
export function startPlainBudget(nodes: number): void {
  nodesLeft = nodes;
}
export const plainBudgetSpent = (): boolean => nodesLeft < 0;

/** The object the budget ran out on, and its keys (listing 100k keys takes V8 ~20 ms). */
let listed: { of: object; keys: string[] } | undefined;

/** The keys of `obj` if the budget ran out on it (given once); `listedKeys(undefined)` forgets them. */
export function listedKeys(obj: object | undefined): string[] | undefined {
  if (obj !== undefined && listed?.of !== obj) return undefined;
  const keys = listed?.keys;
  listed = undefined;
  return keys;
}
export function endPlainBudget(): void {
  nodesLeft = Number.POSITIVE_INFINITY;
}

/**
 * True when `JSON.stringify(value)` already writes what `toJson` would: strings, finite numbers,
 * booleans, null, and plain arrays and objects of those, not too deep. It allocates nothing, so the
 * common case (plain meta) skips the copy `toJson` makes. Anything else, or anything that throws
 * when read, is false and goes through `toJson`.
 */
export function isPlainJson(value: unknown, depth = 0): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value);
    case 'object':
      break;
    default:
      return false;
  }
  if (value === null) return true;
  if (depth >= MAX_DEPTH) return false;
  try {
    if (Array.isArray(value)) {
      // An array with a toJSON of its own is not written through it: toJson maps its elements.
      if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return false;
      if ((nodesLeft -= value.length) < 0) return false;
      for (let i = 0; i < value.length; i++) {
        const v: unknown = value[i];
        // In an array JSON writes null for these, as toJson does.
        if (v !== undefined && typeof v !== 'function' && typeof v !== 'symbol' && !isPlainJson(v, depth + 1)) return false;
      }
      return true;
    }
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return false;
    if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return false;
    // The keys are listed first: under a budget, an object with more than is left is given up on
    // before any is read, and its keys are kept for whoever writes it next (`listedKeys`).
    const keys = Object.keys(value);
    if (keys.length > nodesLeft) {
      nodesLeft = -1;
      listed = { of: value, keys };
      return false;
    }
    nodesLeft -= keys.length;
    for (let i = 0; i < keys.length; i++) {
      const v: unknown = (value as Record<string, unknown>)[keys[i]!];
      if (v !== undefined && typeof v !== 'function' && typeof v !== 'symbol' && !isPlainJson(v, depth + 1)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** `obj[key]`, or a description of what reading it threw (a getter, a Proxy trap). Never throws. */
export function readField(obj: unknown, key: string): unknown {
  try {
    return (obj as Record<string, unknown>)[key];
  } catch (err) {
    return `[Unserializable: ${err instanceof Error ? safeString(err.message) : safeString(err)}]`;
  }
}

/** String() that never throws (objects whose toString throws, null-prototype objects). */
export function safeString(value: unknown): string {
  try {
    return typeof value === 'string' ? value : String(value);
  } catch {
    try {
      return Object.prototype.toString.call(value);
    } catch {
      return UNSERIALIZABLE;
    }
  }
}

/** A message is always a string: objects are rendered as JSON, never `[object Object]`. */
export function renderMessage(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === undefined) return '';
  if (value !== null && typeof value === 'object') {
    const j = toJson(value);
    return typeof j === 'string' ? j : JSON.stringify(j);
  }
  return safeString(value);
}

/**
 * A copy of plain JSON data with every lone UTF-16 surrogate, in keys and strings, replaced by
 * U+FFFD (`String#toWellFormed`). Strings that are already well-formed are kept as they are.
 */
export function wellFormed(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return value.toWellFormed();
  if (value === null || typeof value !== 'object' || depth > 4 * MAX_DEPTH) return value;
  if (Array.isArray(value)) return value.map((v: unknown) => wellFormed(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const v = wellFormed((value as Record<string, unknown>)[key], depth + 1);
    const k = key.toWellFormed();
    if (k === '__proto__') Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
    else out[k] = v;
  }
  return out;
}
