import { randomUUID } from 'node:crypto';
import { type LevelInfo, LevelTable } from './levels';
import type { ResolvedOptions } from './options';
import {
  endPlainBudget,
  isPlainJson,
  listedKeys,
  MAX_DEPTH,
  plainBudgetSpent,
  readField as read,
  renderMessage,
  safeString,
  startPlainBudget,
  toJson,
  wellFormed,
} from './serialize';

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

/**
 * The context for records of a transport with `config`: `extraFields` already made safe, and the
 * level table of the logger's `levels` (undefined: winston's npm levels).
 */
export function recordContext(
  config: Pick<ResolvedOptions, 'project' | 'table' | 'idField' | 'maxRecordBytes' | 'levelNumbers'>,
  extraFields: Readonly<Record<string, unknown>>,
  levels: Record<string, number> | undefined,
): RecordContext {
  const { project, table, idField, maxRecordBytes } = config;
  return { project, table, extraFields, idField, maxRecordBytes, levels: new LevelTable(levels, config.levelNumbers) };
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
  /** `extra` as JSON object text (own keys of the info but the record's own fields), or undefined when empty. */
  readonly extra: string | undefined;
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

/** What `extra` is made of: its JSON text, and the first Error among the info's own values. */
export interface ExtraText {
  readonly text: string | undefined;
  readonly firstError: Error | undefined;
}

const isPlainContainer = (value: object): boolean => {
  if (Array.isArray(value)) return true;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
};

/** What a value cut by truncation keeps at least, in bytes: the smallest cut is the budget (less a character). */
const budgetOf = (max: number): number => Math.max(256, Math.floor(max / 8));

/** A string JSON.stringify would write with an escape (or a surrogate, paired or not). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;
/**
 * `s` as a JSON string, a lone surrogate already U+FFFD (so the text does not shrink when the
 * record is mended: the sizes counted while writing stay true).
 */
const jsonString = (s: string): string => (NEEDS_ESCAPE.test(s) ? JSON.stringify(s.toWellFormed()) : `"${s}"`);

/** JSON text of what toJson made, lone surrogates made U+FFFD. */
const jsonOf = (value: unknown): string | undefined => {
  const text = JSON.stringify(value);
  return text?.includes('\\ud') ? text.replace(LONE_ESCAPE, '$1\ufffd') : text;
};

/**
 * `extra` written entry by entry, for an info with many keys or a value too large to check first:
 * no copy of the info is made, strings need no call to JSON.stringify when nothing in them needs
 * escaping, and what truncation would throw away of a record surely over `max` bytes is never read:
 * the keys after those that already fill `max` even cut down (truncation keeps a prefix of the
 * keys), and the members of a value after its first `max` characters (a value that long is cut
 * below that). Up to there the text is the one `extraCareful` writes.
 */
export function extraWide(info: Record<string, unknown>, keys: readonly string[], max = Number.POSITIVE_INFINITY): ExtraText {
  const least = budgetOf(max) - 8;
  const entries: string[] = [];
  let firstError: Error | undefined;
  /** A lower bound of what the entries written keep after any cut. */
  let kept = 0;
  for (let i = 0; i < keys.length && kept <= max; i++) {
    const key = keys[i]!;
    if (OWN_KEYS.has(key)) continue;
    const value = read(info, key);
    if (firstError === undefined && typeof value === 'object' && isError(value)) firstError = value;
    const text = writeValue(value, 1, max, new Set());
    if (text === undefined) continue;
    const name = jsonString(key);
    entries.push(`${name}:${text}`);
    if (key !== '_truncated') kept += name.length + 2 + Math.min(text.length, least);
  }
  listedKeys(undefined);
  return { text: entries.length === 0 ? undefined : `{${entries.join(',')}}`, firstError };
}

/**
 * `value` (at `depth`) as the JSON `toJson` would make of it, plain containers written member by
 * member until `room` characters are written; undefined for what JSON leaves out.
 */
function writeValue(value: unknown, depth: number, room: number, ancestors: Set<object>): string | undefined {
  switch (typeof value) {
    case 'string':
      return jsonString(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'bigint':
      return `"${value}"`;
  }
  if (value === null) return 'null';
  const obj = value as object;
  try {
    if (!ancestors.has(obj) && depth < MAX_DEPTH && isPlainContainer(obj) && typeof (obj as { toJSON?: unknown }).toJSON !== 'function') {
      ancestors.add(obj);
      try {
        return writeContainer(obj, depth, room, ancestors);
      } finally {
        ancestors.delete(obj);
      }
    }
  } catch {
    // a Proxy's trap: toJson describes it
  }
  return jsonOf(toJson(obj, depth, ancestors));
}

function writeContainer(obj: object, depth: number, room: number, ancestors: Set<object>): string {
  const parts: string[] = [];
  let written = 0;
  if (Array.isArray(obj)) {
    for (let i = 0; i < obj.length && written <= room; i++) {
      const text = writeValue(read(obj, String(i)), depth + 1, room - written, ancestors) ?? 'null';
      parts.push(text);
      written += text.length + 1;
    }
    return `[${parts.join(',')}]`;
  }
  const keys = listedKeys(obj) ?? Object.keys(obj);
  for (let i = 0; i < keys.length && written <= room; i++) {
    const key = keys[i]!;
    const text = writeValue(read(obj, key), depth + 1, room - written, ancestors);
    if (text === undefined) continue;
    const entry = `${jsonString(key)}:${text}`;
    parts.push(entry);
    written += entry.length + 1;
  }
  return `{${parts.join(',')}}`;
}

/**
 * `extra` read key by key, every read guarded, plain values written as they are and the rest made
 * safe by `toJson`. Returns undefined when `nodes` is given and the values hold more members than
 * that: `isPlainJson` stops looking, and `extraWide` is the better way for that many.
 */
export function extraCareful(info: Record<string, unknown>, keys = keysOf(info), nodes = Number.POSITIVE_INFINITY): ExtraText | undefined {
  let extra: Record<string, unknown> | undefined;
  let firstError: Error | undefined;
  startPlainBudget(nodes);
  try {
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (OWN_KEYS.has(key)) continue;
      const value = read(info, key);
      // Plain data is written as it is; only the rest is copied (and made safe) by toJson.
      let j: unknown = value;
      if (!isPlainJson(value, 1)) {
        if (plainBudgetSpent()) return undefined;
        if (firstError === undefined && isError(value)) firstError = value;
        j = toJson(value, 1);
        if (j === undefined) continue;
      }
      extra ??= {};
      if (key === '__proto__') Object.defineProperty(extra, key, { value: j, enumerable: true, writable: true, configurable: true });
      else extra[key] = j;
    }
  } finally {
    endPlainBudget();
  }
  return { text: extra === undefined ? undefined : JSON.stringify(extra), firstError };
}

function keysOf(info: Record<string, unknown>): string[] {
  try {
    return Object.keys(info);
  } catch {
    return [];
  }
}

/**
 * Records with more keys than this, or whose values hold more members, are written entry by entry
 * (`extraWide`): for them the copy the careful path makes costs most; below it the careful path,
 * one JSON.stringify of a copy, is the faster.
 */
const WIDE = 1000;

function extraOf(info: Record<string, unknown>, max: number): ExtraText {
  const keys = keysOf(info);
  return (keys.length > WIDE ? undefined : extraCareful(info, keys, WIDE)) ?? extraWide(info, keys, max);
}

function collect(info: Record<string, unknown>, ctx: RecordContext, now: number): Parts {
  const { text, firstError } = extraOf(info, ctx.maxRecordBytes);
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
    extra: text,
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

/** The record's JSON text up to its message (`{"timestamp":…,"message":`). */
function headOf(p: Parts): string {
  let level = levelFragments.get(p.level);
  if (level === undefined) {
    level = `"level":${JSON.stringify(p.level.name.toWellFormed())},"level_num":${JSON.stringify(p.level.num)}`;
    levelFragments.set(p.level, level);
  }
  return `{"timestamp":"${p.timestamp}",${level},"message":`;
}

/**
 * The record as JSON text, written piece by piece from JSON texts of its parts (`message` and
 * `exception` as JSON strings, `extra` as a JSON object): the same text as `JSON.stringify` of the
 * record object, without building it.
 */
function assemble(p: Parts, ctx: RecordContext, message: string, extra: string | undefined, exception: string | undefined): string {
  const f = fragmentsOf(ctx);
  let text = `${headOf(p)}${message}${f.projectTable}`;
  if (extra !== undefined) text += `,"extra":${extra}`;
  if (exception !== undefined) text += `,"exception":${exception}`;
  if (p.id !== undefined) text += `${f.idKey}"${p.id}"`;
  return `${text}${f.tail}}`;
}

const asText = (p: Parts, ctx: RecordContext): string =>
  assemble(p, ctx, JSON.stringify(p.message), p.extra, p.exception === undefined ? undefined : JSON.stringify(p.exception));

/** A `\udXXX` escape JSON.stringify writes for a lone surrogate (after an even run of backslashes: not an escaped `\`). */
const LONE_ESCAPE = /(?<!\\)((?:\\\\)*)\\ud[89a-f][0-9a-f]{2}/g;

/**
 * The parts with every lone UTF-16 surrogate (message, exception, `extra`'s keys and strings)
 * replaced by U+FFFD, so the text is valid for a strict JSON parser: `JSON.stringify` writes a lone
 * surrogate as a `\udXXX` escape, which Vector's decoder rejects. The caller's objects are never changed.
 */
function wellFormedParts(p: Parts): Parts {
  return {
    ...p,
    message: p.message.toWellFormed(),
    exception: p.exception?.toWellFormed(),
    extra: p.extra?.replace(LONE_ESCAPE, '$1\ufffd'),
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
  return truncate(parts, ctx, bytes);
}

/** The record shipped downstream in place of dropped ones ("N records dropped: reason"), so the gap shows where logs are read. */
export function noticeRecord(count: number, reason: string, overflow: string, ctx: RecordContext): string {
  return buildRecord({ level: 'warning', message: `${count} records dropped: ${reason}`, dropped: count, reason, overflow }, ctx);
}

const MARK = '…[truncated]';
const MARK_BYTES = Buffer.byteLength(MARK);

/**
 * `text` cut and marked `…[truncated]`, as a JSON string of at most `bytes` bytes of UTF-8 (never
 * less than the marker's). Cut at a character boundary: never inside a UTF-8 sequence, so never
 * between the halves of a surrogate pair. One pass, over the part that is kept.
 */
export function cutToJson(text: string, bytes: number): string {
  const limit = bytes - 2 - MARK_BYTES;
  const n = text.length;
  let used = 0;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    // What the character takes in the JSON string, in UTF-8, its escape included.
    let w: number;
    let step = 1;
    if (c < 0x80) {
      if (c >= 0x20) w = c === 0x22 || c === 0x5c ? 2 : 1; // \" and \\
      else w = c === 8 || c === 9 || c === 10 || c === 12 || c === 13 ? 2 : 6; // \n or \u00XX
    } else if (c < 0x800) {
      w = 2;
    } else if (c < 0xd800 || c > 0xdfff) {
      w = 3;
    } else if (c <= 0xdbff && i + 1 < n && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      w = 4; // a surrogate pair: one character, never split
      step = 2;
    } else {
      w = 6; // a lone surrogate (mended before): its escape
    }
    if (used + w > limit) break;
    used += w;
    i += step;
  }
  return JSON.stringify(text.slice(0, i) + MARK);
}

/** Index just past the JSON string starting at `i` (a `"`), in text JSON.stringify wrote. */
function endOfString(t: string, i: number): number {
  let j = i + 1;
  for (;;) {
    j = t.indexOf('"', j);
    let b = j - 1;
    while (t.charCodeAt(b) === 0x5c) b--;
    if ((j - 1 - b) % 2 === 0) return j + 1;
    j++;
  }
}

/** Index just past the JSON value starting at `i`, in text JSON.stringify wrote (no white space). */
function endOfValue(t: string, i: number): number {
  const c = t.charCodeAt(i);
  if (c === 0x22) return endOfString(t, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    let j = i;
    for (;;) {
      const d = t.charCodeAt(j);
      if (d === 0x22) {
        j = endOfString(t, j);
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if ((d === 0x7d || d === 0x5d) && --depth === 0) return j + 1;
      j++;
    }
  }
  let j = i;
  for (;;) {
    const d = t.charCodeAt(j);
    if (d === 0x2c || d === 0x7d || d === 0x5d) return j;
    j++;
  }
}

/**
 * The top-level entries of a JSON object's text as JSON.stringify wrote it, three numbers each:
 * where its `"key":` starts, where its value starts and where the value ends. Linear; strings are
 * skipped with indexOf.
 */
function entriesOf(t: string): number[] {
  const out: number[] = [];
  const last = t.length - 1; // the closing brace
  let i = 1;
  while (i < last) {
    const value = endOfString(t, i) + 1; // past the colon
    const end = endOfValue(t, value);
    out.push(i, value, end);
    i = end + 1; // past the comma
  }
  return out;
}

const TRUNCATED = '"_truncated":true';
const TRUNCATED_BYTES = Buffer.byteLength(TRUNCATED);

/**
 * Cuts a record to `ctx.maxRecordBytes`: the message, the exception and the largest `extra` values
 * are truncated, largest first; if many small values still make it too long, `extra` keeps its first
 * keys that fit. `extra._truncated = true` is set. The record is still delivered.
 * Works on the JSON text of `extra` (one scan for its entries), so it is linear in the record's
 * size: every value is measured once, the total is kept by difference, and the record is written once.
 */
function truncate(p: Parts, ctx: RecordContext, bytes: number): string {
  const max = ctx.maxRecordBytes;
  const budget = budgetOf(max);
  const t = p.extra ?? '{}';
  const ascii = Buffer.byteLength(t) === t.length;
  const size = (from: number, to: number): number => (ascii ? to - from : Buffer.byteLength(t.slice(from, to)));
  const at = entriesOf(t);
  const count = at.length / 3;
  // `bytes` is the record's size as it is: `_truncated` is added (with `,"extra":{}` if there was none).
  let total = bytes + (p.extra === undefined ? Buffer.byteLength(',"extra":{}') + TRUNCATED_BYTES : TRUNCATED_BYTES + 1);
  /** Entries left out of the text (a `_truncated` of the caller's gives way to ours), and values replaced by their cut JSON. */
  const skipped = new Set<number>();
  const replaced = new Map<number, string>();
  for (let i = 0; i < count; i++) {
    if (at[3 * i + 1]! - at[3 * i]! === 13 && t.startsWith('"_truncated":', at[3 * i]!)) {
      skipped.add(i);
      total -= size(at[3 * i]!, at[3 * i + 2]!) + 1;
    }
  }

  let message = JSON.stringify(p.message);
  let exception = p.exception === undefined ? undefined : JSON.stringify(p.exception);
  interface Candidate {
    /** -1 the message, -2 the exception, else the entry's index. */
    readonly at: number;
    readonly size: number;
  }
  const big: Candidate[] = [];
  const messageBytes = Buffer.byteLength(message);
  if (messageBytes > budget) big.push({ at: -1, size: messageBytes });
  const exceptionBytes = exception === undefined ? 0 : Buffer.byteLength(exception);
  if (exceptionBytes > budget) big.push({ at: -2, size: exceptionBytes });
  for (let i = 0; i < count; i++) {
    const value = at[3 * i + 1]!;
    const end = at[3 * i + 2]!;
    // A UTF-16 unit is at most 3 bytes: a short value is known to be small without counting.
    if ((end - value) * 3 <= budget || skipped.has(i)) continue;
    const s = size(value, end);
    if (s > budget) big.push({ at: i, size: s });
  }
  big.sort((a, b) => b.size - a.size);

  for (const c of big) {
    if (total <= max) break;
    // The string to cut: a string value itself; an object's or array's JSON text, as text.
    let text: string;
    if (c.at === -1) text = p.message;
    else if (c.at === -2) text = p.exception!;
    else {
      const json = t.slice(at[3 * c.at + 1]!, at[3 * c.at + 2]!);
      text = json.charCodeAt(0) === 0x22 ? (JSON.parse(json) as string) : json;
    }
    const short = cutToJson(text, Math.max(budget, c.size - (total - max)));
    total += Buffer.byteLength(short) - c.size;
    if (c.at === -1) message = short;
    else if (c.at === -2) exception = short;
    else replaced.set(c.at, short);
  }
  // Many small values: the last keys go until the rest fits (`"key":value,` each).
  let kept = count;
  while (kept > 0 && total > max) {
    kept--;
    if (skipped.has(kept)) continue;
    const value = replaced.get(kept);
    const [key, start, end] = [at[3 * kept]!, at[3 * kept + 1]!, at[3 * kept + 2]!];
    total -= (value === undefined ? size(key, end) : size(key, start) + Buffer.byteLength(value)) + 1;
  }
  let extra: string;
  if (replaced.size === 0 && skipped.size === 0) {
    // The usual case: the kept entries are one stretch of the text.
    extra = kept === 0 ? `{${TRUNCATED}}` : `${t.slice(0, at[3 * kept - 1]!)},${TRUNCATED}}`;
  } else {
    const parts: string[] = [];
    for (let i = 0; i < kept; i++) {
      if (skipped.has(i)) continue;
      const value = replaced.get(i);
      parts.push(value === undefined ? t.slice(at[3 * i]!, at[3 * i + 2]!) : t.slice(at[3 * i]!, at[3 * i + 1]!) + value);
    }
    parts.push(TRUNCATED);
    extra = `{${parts.join(',')}}`;
  }
  let out = assemble(p, ctx, message, extra, exception);
  if (Buffer.byteLength(out) > max) {
    // What is left is too long by itself (a long exception with a long message, say).
    message = cutToJson(p.message, budget);
    exception = p.exception === undefined ? undefined : cutToJson(p.exception, budget);
    out = assemble(p, ctx, message, `{${TRUNCATED}}`, exception);
  }
  return out;
}
