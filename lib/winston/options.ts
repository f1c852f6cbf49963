import type { AgentOptions } from 'node:https';
import type { TransportStreamOptions } from 'winston-transport';
import { refuseUnknownKeys, TRANSPORT_OPTION_KEYS } from './option-names';
import { collectSecrets, describeRefusedUrl, type Secrets } from '../secrets';

/** Options of {@link VectorTransport}. Durations are milliseconds. */
export interface VectorTransportOptions extends TransportStreamOptions {
  /** URL of Vector's `http_server` source. Userinfo (`http://user:pass@host`) becomes basic auth. Required. */
  vectorUrl: string;
  /** Written on every record. Required, non-empty. */
  project: string;
  /** Written on every record. Required, non-empty. */
  table: string;
  /** SQLite file of the durable queue; its directory is created. Default `./logs/queue.db`. */
  dbPath?: string;
  /**
   * The destination this transport's records are filed under in the queue file: it ships only
   * those (and records from versions that kept none). Default: `vectorUrl` without credentials, so
   * services with different Vectors can share a `dbPath`. Set it to an old URL to ship that backlog
   * to a new `vectorUrl` (what `winston-vector drain --from` does).
   */
  destination?: string;
  /** Pending records that trigger a shipment, and the most one request carries. Default 100. */
  batchSize?: number;
  /** Ship whatever is pending at least this often, in ms. Default 5000. */
  flushInterval?: number;
  /** Attempts per shipment before the batch waits for the next round (it is never dropped for it). Default 3. */
  maxRetries?: number;
  /** Base of the exponential backoff with full jitter, in ms. Default 1000. */
  retryDelay?: number;
  /** Cap of the backoff and of a `Retry-After` wait, in ms. Default 30000. */
  maxRetryDelay?: number;
  /** Fields merged at the top level of every record. A key that collides with a record field is refused. */
  extraFields?: Record<string, unknown>;
  /**
   * Extra request headers. The values of `Authorization`, `Proxy-Authorization`, `Cookie` and of any
   * header whose name holds `token`, `key`, `secret`, `auth`, `passw`, `session` or `signature` are
   * secrets: they never appear in errors, warnings, stats, the queue file or CLI output.
   */
  headers?: Record<string, string>;
  /** More header names whose values are secrets (case-insensitive). Default none. */
  secretHeaders?: string[];
  /** Per-request timeout, in ms. Default 10000. */
  timeout?: number;
  /** Request body: `'json'` (a JSON array on one line, default) or `'ndjson'` (one record per line). */
  body?: 'json' | 'ndjson';
  /** `'gzip'` (default) or `'none'`. */
  compression?: 'gzip' | 'none';
  /** Level name → `level_num`, for custom level sets. Wins over the built-in tables. */
  levelNumbers?: Record<string, number>;
  /** How long `close()` keeps shipping before it leaves the rest on disk, in ms. Default 5000. */
  closeTimeout?: number;
  /** When set, every record carries a unique id under this key, stable across resends. Off by default. */
  idField?: string;
  /** Records larger than this (serialized, in bytes) are truncated. Default 1 MiB. */
  maxRecordBytes?: number;
  /**
   * SQLite `synchronous` setting. `'normal'` (default) survives a killed process; `'full'` also
   * survives a power loss, at the cost of an fsync per commit.
   */
  synchronous?: 'normal' | 'full';
  /** TLS settings for an https `vectorUrl` (`ca`, `cert`, `key`, `rejectUnauthorized`, …). */
  tls?: TlsOptions;
  /**
   * Records accepted and waiting for the next commit before the transport pushes back on winston's
   * stream (they go into one transaction); in a synchronous burst, chunks go to the delivery worker
   * as they fill, while fewer than four times as many handed over are not yet committed. Once it has
   * pushed back, also the records it takes in one turn of the event loop, until a turn ends with
   * nothing held back. Default 16384.
   */
  highWaterMark?: number;
  /**
   * How long, in ms, records logged a few at a time wait at most to be committed together (in the
   * delivery worker, counted from the start of the last commit): one commit for all that came in
   * meanwhile instead of one per turn of the event loop. A commit starts at once
   * (at the end of the current turn) when 256 records or more wait (or `highWaterMark`), and when
   * `committed()`, `flush()` or `close()` is called. `kill -9` can lose what waits. 0: every turn
   * commits. Default 5.
   */
  commitDelay?: number;
  /** Bound of the queue on disk (the database, its WAL and its shm file together), in bytes. Default 256 MiB. */
  maxQueueBytes?: number;
  /** What goes when the queue is full: `'drop-oldest'` (default) or `'drop-newest'`. */
  overflow?: 'drop-oldest' | 'drop-newest';
  /** Records older than this are dropped, in ms. Default: no age bound. */
  maxAge?: number;
  /** Rows the dead-letter table keeps; the oldest go first. Default 10000. */
  maxDeadLetters?: number;
  /**
   * How long a claimed batch is held before another process sharing `dbPath` may take it, in ms.
   * Default `maxRetries × (timeout + maxRetryDelay) + 60000`.
   */
  leaseTimeout?: number;
}

export type TlsOptions = Pick<AgentOptions, 'ca' | 'cert' | 'key' | 'pfx' | 'passphrase' | 'rejectUnauthorized' | 'servername'>;

export interface ResolvedOptions {
  /** Without userinfo: safe to show. */
  readonly url: string;
  readonly authorization: string | undefined;
  readonly project: string;
  readonly table: string;
  readonly dbPath: string;
  readonly destination: string;
  readonly batchSize: number;
  readonly flushInterval: number;
  readonly maxRetries: number;
  readonly retryDelay: number;
  readonly maxRetryDelay: number;
  readonly extraFields: Readonly<Record<string, unknown>>;
  readonly headers: Readonly<Record<string, string>>;
  readonly timeout: number;
  readonly body: 'json' | 'ndjson';
  readonly compression: 'gzip' | 'none';
  readonly levelNumbers: Readonly<Record<string, number>>;
  readonly closeTimeout: number;
  readonly idField: string | undefined;
  readonly maxRecordBytes: number;
  readonly synchronous: 'normal' | 'full';
  readonly tls: Readonly<TlsOptions>;
  readonly highWaterMark: number;
  readonly commitDelay: number;
  readonly maxQueueBytes: number;
  readonly overflow: 'drop-oldest' | 'drop-newest';
  readonly maxAge: number | undefined;
  readonly maxDeadLetters: number;
  readonly leaseTimeout: number;
  /** Every secret the options hold, to take out of any text that leaves the process. */
  readonly secrets: Secrets;
}

/**
 * The default of every option that has a fixed one, in one place: resolveOptions reads them here,
 * and README's options table is checked against them (spec/docs.spec.ts). `maxRetryDelay` is
 * never below `retryDelay`; `leaseTimeout` and `destination` are derived from other options.
 */
export const DEFAULTS = Object.freeze({
  dbPath: './logs/queue.db',
  batchSize: 100,
  flushInterval: 5000,
  maxRetries: 3,
  retryDelay: 1000,
  maxRetryDelay: 30_000,
  timeout: 10_000,
  body: 'json',
  compression: 'gzip',
  closeTimeout: 5000,
  maxRecordBytes: 1024 * 1024,
  synchronous: 'normal',
  highWaterMark: 16_384,
  commitDelay: 5,
  maxQueueBytes: 256 * 1024 * 1024,
  overflow: 'drop-oldest',
  maxDeadLetters: 10_000,
} as const);

/** Keys every record owns; `extraFields` may not use them. */
export const RECORD_FIELDS: readonly string[] = [
  'timestamp', 'level', 'level_num', 'message', 'project', 'table', 'extra', 'exception',
];

const show = (value: unknown): string => {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return '[function]';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
};

function integer(name: string, value: unknown, fallback: number, min: number): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new RangeError(`\`${name}\` must be an integer ≥ ${min}, got ${show(v)}`);
  }
  return v;
}

function atMost(name: string, value: number, max: number): number {
  if (value > max) throw new RangeError(`\`${name}\` must be at most ${max}, got ${value}`);
  return value;
}

function nonEmpty(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new TypeError(`\`${name}\` must be a non-empty string, got ${show(value)}`);
  }
  return value;
}

function oneOf<T extends string>(name: string, value: unknown, fallback: T, allowed: readonly T[]): T {
  const v = value ?? fallback;
  if (!allowed.includes(v as T)) {
    throw new TypeError(`\`${name}\` must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${show(v)}`);
  }
  return v as T;
}

function plainObject(name: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`\`${name}\` must be an object, got ${show(value)}`);
  }
  return value as Record<string, unknown>;
}

/** Userinfo is moved out of the URL into an Authorization header, so the URL itself is safe to show. */
function resolveUrl(raw: unknown): { url: string; authorization: string | undefined } {
  if (typeof raw !== 'string' || raw === '') {
    throw new TypeError(`\`vectorUrl\` must be an http(s) URL, got ${show(raw)}`);
  }
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new TypeError(`\`vectorUrl\` must be an http(s) URL, got ${show(describeRefusedUrl(raw))}`);
  }
  let authorization: string | undefined;
  if (parsed.username !== '' || parsed.password !== '') {
    const user = decodeURIComponent(parsed.username);
    const pass = decodeURIComponent(parsed.password);
    authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    parsed.username = '';
    parsed.password = '';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TypeError(`\`vectorUrl\` must be an http(s) URL, got ${show(raw.includes('@') ? describeRefusedUrl(raw) : parsed.href)}`);
  }
  return { url: parsed.href, authorization };
}

/** A destination as it is filed: a URL without its userinfo (never written to the queue file). */
export function destinationKey(value: string): string {
  try {
    const u = new URL(value);
    u.username = '';
    u.password = '';
    return u.href;
  } catch {
    return value;
  }
}

/**
 * Defaults, then validation, then a frozen object. Throws a TypeError/RangeError naming the option;
 * an unknown key is refused with the nearest valid name.
 */
export function resolveOptions(options: VectorTransportOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`VectorTransport options must be an object, got ${show(options)}`);
  }
  refuseUnknownKeys(options, TRANSPORT_OPTION_KEYS, 'VectorTransport');
  const { url, authorization } = resolveUrl(options.vectorUrl);
  const project = nonEmpty('project', options.project);
  const table = nonEmpty('table', options.table);
  const dbPath = options.dbPath === undefined ? DEFAULTS.dbPath : nonEmpty('dbPath', options.dbPath);

  const idField = options.idField === undefined ? undefined : nonEmpty('idField', options.idField);
  if (idField !== undefined && RECORD_FIELDS.includes(idField)) {
    throw new TypeError(`\`idField\` must not be a record field, got ${show(idField)}`);
  }

  const extraFields = plainObject('extraFields', options.extraFields);
  for (const key of Object.keys(extraFields)) {
    if (RECORD_FIELDS.includes(key) || key === idField) {
      throw new TypeError(`\`extraFields\` key ${show(key)} collides with a record field`);
    }
  }

  const headers = plainObject('headers', options.headers);
  for (const [key, value] of Object.entries(headers)) {
    if (typeof value !== 'string') {
      throw new TypeError(`\`headers\` value of ${show(key)} must be a string, got ${show(value)}`);
    }
  }

  const secretHeaders = options.secretHeaders ?? [];
  if (!Array.isArray(secretHeaders) || secretHeaders.some((h) => typeof h !== 'string')) {
    throw new TypeError(`\`secretHeaders\` must be an array of header names, got ${show(secretHeaders)}`);
  }

  const levelNumbers = plainObject('levelNumbers', options.levelNumbers);
  for (const [key, value] of Object.entries(levelNumbers)) {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new TypeError(`\`levelNumbers\` value of ${show(key)} must be a finite number, got ${show(value)}`);
    }
  }

  const retryDelay = integer('retryDelay', options.retryDelay, DEFAULTS.retryDelay, 0);
  const maxRetryDelay = integer('maxRetryDelay', options.maxRetryDelay, Math.max(DEFAULTS.maxRetryDelay, retryDelay), 0);
  if (maxRetryDelay < retryDelay) {
    throw new RangeError(`\`maxRetryDelay\` must be ≥ \`retryDelay\` (${retryDelay}), got ${maxRetryDelay}`);
  }

  const maxRetries = integer('maxRetries', options.maxRetries, DEFAULTS.maxRetries, 1);
  const timeout = integer('timeout', options.timeout, DEFAULTS.timeout, 1);
  const tls = plainObject('tls', options.tls) as TlsOptions;
  const secrets = collectSecrets({
    rawUrl: options.vectorUrl,
    authorization,
    headers: headers as Record<string, string>,
    secretHeaders,
    passphrase: typeof tls.passphrase === 'string' ? tls.passphrase : undefined,
  });
  return Object.freeze({
    url,
    authorization,
    project,
    table,
    dbPath,
    destination: options.destination === undefined ? url : destinationKey(nonEmpty('destination', options.destination)),
    batchSize: integer('batchSize', options.batchSize, DEFAULTS.batchSize, 1),
    flushInterval: integer('flushInterval', options.flushInterval, DEFAULTS.flushInterval, 1),
    maxRetries,
    retryDelay,
    maxRetryDelay,
    extraFields: Object.freeze({ ...extraFields }),
    headers: Object.freeze({ ...(headers as Record<string, string>) }),
    timeout,
    body: oneOf('body', options.body, DEFAULTS.body, ['json', 'ndjson'] as const),
    compression: oneOf('compression', options.compression, DEFAULTS.compression, ['gzip', 'none'] as const),
    levelNumbers: Object.freeze({ ...(levelNumbers as Record<string, number>) }),
    closeTimeout: integer('closeTimeout', options.closeTimeout, DEFAULTS.closeTimeout, 0),
    idField,
    maxRecordBytes: integer('maxRecordBytes', options.maxRecordBytes, DEFAULTS.maxRecordBytes, 1024),
    synchronous: oneOf('synchronous', options.synchronous, DEFAULTS.synchronous, ['normal', 'full'] as const),
    tls: Object.freeze({ ...tls }),
    highWaterMark: integer('highWaterMark', options.highWaterMark, DEFAULTS.highWaterMark, 1),
    commitDelay: atMost('commitDelay', integer('commitDelay', options.commitDelay, DEFAULTS.commitDelay, 0), 1000),
    maxQueueBytes: integer('maxQueueBytes', options.maxQueueBytes, DEFAULTS.maxQueueBytes, 64 * 1024),
    overflow: oneOf('overflow', options.overflow, DEFAULTS.overflow, ['drop-oldest', 'drop-newest'] as const),
    maxAge: options.maxAge === undefined ? undefined : integer('maxAge', options.maxAge, 0, 1),
    maxDeadLetters: integer('maxDeadLetters', options.maxDeadLetters, DEFAULTS.maxDeadLetters, 0),
    leaseTimeout: integer('leaseTimeout', options.leaseTimeout, maxRetries * (timeout + maxRetryDelay) + 60_000, 100),
    secrets,
  });
}
