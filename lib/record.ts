import { randomUUID } from 'node:crypto';
import type { LevelInfo, LevelTable } from './levels';
import { isPlainJson, readField as read, renderMessage, safeString, toJson, wellFormed } from './serialize';

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
    const tail = JSON.stringify(wellFormed(ctx.extraFields)).slice(1, -1);
    f = {
      projectTable: `,"project":${JSON.stringify(ctx.project.toWellFormed())},"table":${JSON.stringify(ctx.table.toWellFormed())}`,
      tail: tail === '' ? '' : `,${tail}`,
      idKey: ctx.idField === undefined ? '' : `,${JSON.stringify(ctx.idField.toWellFormed())}:`,
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
    level = `"level":${JSON.stringify(p.level.name.toWellFormed())},"level_num":${JSON.stringify(p.level.num)}`;
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
    level: p.level.name.toWellFormed(),
    level_num: p.level.num,
    message: p.message,
    project: ctx.project.toWellFormed(),
    table: ctx.table.toWellFormed(),
  };
  if (p.extra !== undefined) record.extra = p.extra;
  if (p.exception !== undefined) record.exception = p.exception;
  if (ctx.idField !== undefined) record[ctx.idField.toWellFormed()] = p.id;
  return Object.assign(record, wellFormed(ctx.extraFields));
}

/**
 * The parts with every lone UTF-16 surrogate (message, exception, `extra`'s keys and strings)
 * replaced by U+FFFD, so the text is valid for a strict JSON parser: `JSON.stringify` writes a lone
 * surrogate as a `\udXXX` escape, which Vector's decoder rejects. Copies; the caller's objects are
 * never changed.
 */
function wellFormedParts(p: Parts): Parts {
  return {
    ...p,
    message: p.message.toWellFormed(),
    exception: p.exception?.toWellFormed(),
    extra: p.extra === undefined ? undefined : (wellFormed(p.extra) as Record<string, unknown>),
  };
}

/**
 * Builds one record (docs/record-format.md) and returns it serialized.
 * Never throws: anything a caller passes is rendered or described.
 */
export function buildRecord(info: Record<string, unknown>, ctx: RecordContext, now = Date.now()): string {
  let parts = collect(info, ctx, now);
  let text = asText(parts, ctx);
  // JSON.stringify escapes a lone surrogate as `\udXXX` (lower-case hex): only then is there
  // anything to mend (or an escaped backslash before "ud", which mending leaves as it is).
  if (text.includes('\\ud')) {
    parts = wellFormedParts(parts);
    text = asText(parts, ctx);
  }
  // A UTF-16 unit is at most 3 bytes in UTF-8: most records are known to fit without counting.
  if (text.length * 3 <= ctx.maxRecordBytes) return text;
  const bytes = Buffer.byteLength(text);
  if (bytes <= ctx.maxRecordBytes) return text;
  return truncate(asObject(parts, ctx), ctx.maxRecordBytes, bytes);
}

/** The record shipped downstream in place of dropped ones ("N records dropped: reason"), so the gap shows where logs are read. */
export function noticeRecord(count: number, reason: string, overflow: string, ctx: RecordContext): string {
  return buildRecord({ level: 'warning', message: `${count} records dropped: ${reason}`, dropped: count, reason, overflow }, ctx);
}

const MARK = '…[truncated]';
const MARK_BYTES = Buffer.byteLength(MARK);

/**
 * `text` cut to at most `bytes` bytes of UTF-8 (plus the marker), at a character boundary: never
 * inside a UTF-8 sequence, so never between the halves of a surrogate pair.
 */
export function cut(text: string, bytes: number): string {
  if (text.length * 3 <= bytes) return text;
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= bytes) return text;
  let end = Math.max(0, bytes);
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--;
  return buf.toString('utf8', 0, end) + MARK;
}

const TRUNCATED_BYTES = Buffer.byteLength(',"_truncated":true');
const EMPTY_EXTRA_BYTES = Buffer.byteLength(',"extra":{}') - 1;

const jsonBytes = (value: unknown): number => Buffer.byteLength(JSON.stringify(value) ?? '');

/**
 * Cuts a record to `max` bytes: the message, the exception and the largest `extra` values are
 * truncated, largest first; if many small values still make it too long, `extra` keeps its first
 * keys that fit. `extra._truncated = true` is set. The record is still delivered.
 * Linear in the record's size: every value is measured at most once, and the total is kept by
 * difference; the whole record is serialized twice.
 */
function truncate(record: Record<string, unknown>, max: number, bytes: number): string {
  const budget = Math.max(256, Math.floor(max / 8));
  // The record's own `extra` (made by `collect`), so it may be changed in place.
  const hadExtra = record.extra !== undefined;
  const extra = (record.extra as Record<string, unknown> | undefined) ?? {};
  record.extra = extra;
  extra._truncated = true;
  // `bytes` is the record's size as it was: add `,"_truncated":true` (and `,"extra":{}` if new).
  let total = bytes + TRUNCATED_BYTES + (hadExtra ? 0 : EMPTY_EXTRA_BYTES);

  interface Candidate {
    readonly key: string;
    readonly inExtra: boolean;
    /** The value as text to cut: the string itself, or an object's JSON (serialized once). */
    readonly text: string;
    readonly size: number;
  }
  const big: Candidate[] = [];
  const consider = (key: string, inExtra: boolean, value: unknown) => {
    let text: string;
    let size: number;
    if (typeof value === 'string') {
      if (value.length * 3 + 2 <= budget) return;
      text = value;
      size = jsonBytes(value);
    } else if (value !== null && typeof value === 'object') {
      text = JSON.stringify(value) ?? '';
      size = Buffer.byteLength(text);
    } else {
      return;
    }
    if (size > budget) big.push({ key, inExtra, text, size });
  };
  consider('message', false, record.message);
  if (typeof record.exception === 'string') consider('exception', false, record.exception);
  const keys = Object.keys(extra);
  for (const key of keys) if (key !== '_truncated') consider(key, true, extra[key]);
  big.sort((a, b) => b.size - a.size);

  for (const c of big) {
    if (total <= max) break;
    const holder = c.inExtra ? extra : record;
    const text = c.text;
    // Escapes make the JSON longer than the text: a second or third cut takes the difference off.
    let target = Math.max(budget, Buffer.byteLength(text) - (total - max) - MARK_BYTES * 2);
    let short = text;
    let size = c.size;
    for (let tries = 0; tries < 3; tries++) {
      short = cut(text, target);
      size = jsonBytes(short);
      const over = total + size - c.size - max;
      if (over <= 0 || target <= budget) break;
      target = Math.max(budget, target - over);
    }
    holder[c.key] = short;
    total += size - c.size;
  }
  // Many small values: the last keys go until the rest fits (`"key":value,` each).
  for (let i = keys.length - 1; i >= 0 && total > max; i--) {
    const key = keys[i]!;
    if (key === '_truncated') continue;
    const value = extra[key];
    // `"key":` and the comma; a string's size without counting escapes (the check below counts).
    total -= Buffer.byteLength(key) + 4 + (typeof value === 'string' ? Buffer.byteLength(value) + 2 : jsonBytes(value));
    delete extra[key];
  }
  let out = JSON.stringify(record);
  if (Buffer.byteLength(out) > max) {
    // What is left is too long by itself (a long exception with a long message, say).
    record.extra = { _truncated: true };
    if (typeof record.message === 'string') record.message = cut(record.message, budget);
    if (typeof record.exception === 'string') record.exception = cut(record.exception, budget);
    out = JSON.stringify(record);
  }
  return out;
}
