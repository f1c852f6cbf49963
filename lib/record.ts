import { randomUUID } from 'node:crypto';
import type { LevelTable } from './levels';
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

function exceptionOf(info: Record<string, unknown>, keys: string[]): string | undefined {
  if (typeof info.stack === 'string') return info.stack;
  if (info instanceof Error) return safeString(info.stack ?? `${info.name}: ${info.message}`);
  for (const key of keys) {
    const v = info[key];
    if (v instanceof Error) return safeString(v.stack ?? `${v.name}: ${v.message}`);
  }
  return undefined;
}

/**
 * Builds one record (shared/docs/record-format.md) and returns it serialized.
 * Never throws: anything a caller passes is rendered or described.
 */
export function buildRecord(info: Record<string, unknown>, ctx: RecordContext, now = Date.now()): string {
  let keys: string[];
  try {
    keys = Object.keys(info).filter((k) => !OWN_KEYS.has(k));
  } catch {
    keys = [];
  }
  const level = ctx.levels.get(read(info, 'level'));
  const record: Record<string, unknown> = {
    timestamp: timestampOf(read(info, 'timestamp'), now),
    level: level.name,
    level_num: level.num,
    message: renderMessage(read(info, 'message')),
    project: ctx.project,
    table: ctx.table,
  };
  const extra: Record<string, unknown> = {};
  let hasExtra = false;
  for (const key of keys) {
    const value = read(info, key);
    // Plain data is written as it is (JSON.stringify below); only the rest is copied by toJson.
    const j = isPlainJson(value, 1) ? value : toJson(value, 1);
    if (j !== undefined) {
      extra[key] = j;
      hasExtra = true;
    }
  }
  if (hasExtra) record.extra = extra;
  let exception: string | undefined;
  try {
    exception = exceptionOf(info, keys);
  } catch {
    exception = undefined;
  }
  if (exception !== undefined) record.exception = exception;
  if (ctx.idField !== undefined) record[ctx.idField] = randomUUID();
  Object.assign(record, ctx.extraFields);

  const text = JSON.stringify(record);
  return Buffer.byteLength(text) > ctx.maxRecordBytes ? truncate(record, ctx.maxRecordBytes) : text;
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
