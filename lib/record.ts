import { randomUUID } from 'node:crypto';
import type { LevelInfo, LevelTable } from './levels';
import { isPlainJson, renderMessage, safeString, toJson } from './serialize';

/** What every record of one transport shares. */
export interface RecordContext {
  readonly project: string;
  readonly table: string;
  /** Already passed through toJson once, at construction. */
  readonly extraFields: Readonly<Record<string, unknown>>;
  readonly idField: string | undefined;
  readonly maxRecordBytes: number;
  readonly levels: LevelTable;
}

/** Keys of a winston info object that are fields of the record, not `extra`. */
const OWN_KEYS = new Set(['level', 'message', 'timestamp', 'stack']);

/** Records of one burst share their millisecond: format it once. */
let lastNow = Number.NaN;
let lastIso = '';

function timestampOf(value: unknown, now: number): string {
  if (value !== undefined && value !== null) {
    if (value instanceof Date || typeof value === 'string' || typeof value === 'number') {
      const t = new Date(value).getTime();
      if (!Number.isNaN(t)) return new Date(t).toISOString();
    }
  }
  if (now !== lastNow) {
    lastNow = now;
    lastIso = new Date(now).toISOString();
  }
  return lastIso;
}

/** What one info contributes to its record, already normalized. */
interface Parts {
  readonly timestamp: string;
  readonly level: LevelInfo;
  readonly message: string;
  /** The `extra` object (own keys of the info but the record's own fields), or undefined when empty. */
  readonly extra: Record<string, unknown> | undefined;
  readonly exception: string | undefined;
  readonly id: string | undefined;
}

/** `instanceof Error` that never throws (a revoked Proxy throws on it). */
function isError(value: unknown): value is Error {
  try {
    return value instanceof Error;
  } catch {
    return false;
  }
}

function errorText(e: Error): string {
  return safeString(e.stack ?? `${e.name}: ${e.message}`);
}

function collect(info: Record<string, unknown>, ctx: RecordContext, now: number): Parts {
  let keys: string[];
  try {
    keys = Object.keys(info);
  } catch {
    keys = [];
  }
  let extra: Record<string, unknown> | undefined;
  let firstError: Error | undefined;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    if (OWN_KEYS.has(key)) continue;
    const value = read(info, key);
    // Plain data is written as it is; only the rest is copied (and made safe) by toJson.
    let j: unknown = value;
    if (!isPlainJson(value, 1)) {
      if (firstError === undefined && isError(value)) firstError = value;
      j = toJson(value, 1);
      if (j === undefined) continue;
    }
    extra ??= {};
    if (key === '__proto__') Object.defineProperty(extra, key, { value: j, enumerable: true, writable: true, configurable: true });
    else extra[key] = j;
  }
  let exception: string | undefined;
  try {
    // The info's own stack (winston's errors format), the info as an Error, or the first Error in it.
    const stack = info.stack;
    if (typeof stack === 'string') exception = stack;
    else if (info instanceof Error) exception = errorText(info);
    else if (firstError !== undefined) exception = errorText(firstError);
  } catch {
    exception = undefined;
  }
  return {
    timestamp: timestampOf(read(info, 'timestamp'), now),
    level: ctx.levels.get(read(info, 'level')),
    message: renderMessage(read(info, 'message')),
    extra,
    exception,
    id: ctx.idField === undefined ? undefined : randomUUID(),
  };
}

/** The parts of the JSON text every record of a transport shares, and each level's, made once. */
const fragments = new WeakMap<RecordContext, { projectTable: string; tail: string; idKey: string }>();
const levelFragments = new WeakMap<LevelInfo, string>();

function fragmentsOf(ctx: RecordContext): { projectTable: string; tail: string; idKey: string } {
  let f = fragments.get(ctx);
  if (!f) {
    const tail = JSON.stringify(ctx.extraFields).slice(1, -1);
    f = {
      projectTable: `,"project":${JSON.stringify(ctx.project)},"table":${JSON.stringify(ctx.table)}`,
      tail: tail === '' ? '' : `,${tail}`,
      idKey: ctx.idField === undefined ? '' : `,${JSON.stringify(ctx.idField)}:`,
    };
    fragments.set(ctx, f);
  }
  return f;
}

/**
 * The record as JSON text, written piece by piece: the same text as `JSON.stringify(asObject())`,
 * without building the object.
 */
function asText(p: Parts, ctx: RecordContext): string {
  const f = fragmentsOf(ctx);
  let level = levelFragments.get(p.level);
  if (level === undefined) {
    level = `"level":${JSON.stringify(p.level.name)},"level_num":${JSON.stringify(p.level.num)}`;
    levelFragments.set(p.level, level);
  }
  let text = `{"timestamp":"${p.timestamp}",${level},"message":${JSON.stringify(p.message)}${f.projectTable}`;
  // One JSON.stringify for the whole `extra`: the values are plain data by now.
  if (p.extra !== undefined) text += `,"extra":${JSON.stringify(p.extra)}`;
  if (p.exception !== undefined) text += `,"exception":${JSON.stringify(p.exception)}`;
  if (p.id !== undefined) text += `${f.idKey}"${p.id}"`;
  return `${text}${f.tail}}`;
}

function asObject(p: Parts, ctx: RecordContext): Record<string, unknown> {
  const record: Record<string, unknown> = {
    timestamp: p.timestamp,
    level: p.level.name,
    level_num: p.level.num,
    message: p.message,
    project: ctx.project,
    table: ctx.table,
  };
  if (p.extra !== undefined) record.extra = p.extra;
  if (p.exception !== undefined) record.exception = p.exception;
  if (ctx.idField !== undefined) record[ctx.idField] = p.id;
  return Object.assign(record, ctx.extraFields);
}

/**
 * Builds one record (shared/docs/record-format.md) and returns it serialized.
 * Never throws: anything a caller passes is rendered or described.
 */
export function buildRecord(info: Record<string, unknown>, ctx: RecordContext, now = Date.now()): string {
  const parts = collect(info, ctx, now);
  const text = asText(parts, ctx);
  // A UTF-16 unit is at most 3 bytes in UTF-8: most records are known to fit without counting.
  if (text.length * 3 <= ctx.maxRecordBytes || Buffer.byteLength(text) <= ctx.maxRecordBytes) return text;
  return truncate(asObject(parts, ctx), ctx.maxRecordBytes);
}

function read(obj: Record<string, unknown>, key: string): unknown {
  try {
    return obj[key];
  } catch (err) {
    return `[Unserializable: ${err instanceof Error ? safeString(err.message) : safeString(err)}]`;
  }
}

const MARK = '…[truncated]';

function cut(text: string, bytes: number): string {
  if (Buffer.byteLength(text) <= bytes) return text;
  // Characters ≤ bytes; the slice may still be long in UTF-8, so shrink until it fits.
  let s = text.slice(0, Math.max(0, bytes));
  while (Buffer.byteLength(s) > bytes) s = s.slice(0, Math.floor(s.length * 0.9));
  return s + MARK;
}

/**
 * Cuts a record to `max` bytes: the message, the exception and the largest `extra` values are
 * truncated, largest first, and `extra._truncated = true` is set. The record is still delivered.
 */
function truncate(record: Record<string, unknown>, max: number): string {
  const budget = Math.max(256, Math.floor(max / 8));
  const extra = { ...((record.extra as Record<string, unknown> | undefined) ?? {}) };
  record.extra = extra;
  extra._truncated = true;
  const size = () => Buffer.byteLength(JSON.stringify(record));

  const candidates: Array<[string, () => number, (n: number) => void]> = [
    ['message', () => Buffer.byteLength(record.message as string), (n) => (record.message = cut(record.message as string, n))],
  ];
  if (typeof record.exception === 'string') {
    candidates.push(['exception', () => Buffer.byteLength(record.exception as string), (n) => (record.exception = cut(record.exception as string, n))]);
  }
  for (const key of Object.keys(extra)) {
    if (key === '_truncated') continue;
    const text = typeof extra[key] === 'string' ? (extra[key] as string) : JSON.stringify(extra[key]);
    candidates.push([key, () => Buffer.byteLength(typeof extra[key] === 'string' ? (extra[key] as string) : JSON.stringify(extra[key])), (n) => (extra[key] = cut(text, n))]);
  }
  candidates.sort((a, b) => b[1]() - a[1]());
  let total = size();
  for (const [, length, shrink] of candidates) {
    if (total <= max) break;
    const over = total - max;
    shrink(Math.max(budget, length() - over - MARK.length * 2));
    total = size();
  }
  if (total > max) {
    // Many small values: keep only the marker.
    record.extra = { _truncated: true };
    if (typeof record.message === 'string') record.message = cut(record.message, budget);
    if (typeof record.exception === 'string') record.exception = cut(record.exception, budget);
  }
  return JSON.stringify(record);
}
