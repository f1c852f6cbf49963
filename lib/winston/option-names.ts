/**
 * Option keys a caller may pass, and the check that refuses any other with the nearest valid name,
 * so a typo (or a LogSend habit such as `batch_size`) is an error at construction, not a setting
 * silently ignored. TypeScript catches these at compile time; JavaScript callers get this.
 */
import type { VectorTransportOptions } from './options';

/** Every key of `VectorTransportOptions` (README, Options): the compiler checks that none is missing. */
const TRANSPORT_KEYS: Record<Exclude<keyof VectorTransportOptions, 'log' | 'logv' | 'close'>, true> = {
  vectorUrl: true, project: true, table: true, dbPath: true, destination: true, batchSize: true,
  flushInterval: true, maxRetries: true, retryDelay: true, maxRetryDelay: true, extraFields: true,
  headers: true, secretHeaders: true, timeout: true, body: true, compression: true, levelNumbers: true,
  closeTimeout: true, idField: true, maxRecordBytes: true, synchronous: true, tls: true,
  highWaterMark: true, commitDelay: true, maxQueueBytes: true, overflow: true, maxAge: true, maxDeadLetters: true,
  leaseTimeout: true,
  // winston-transport's own (its `log`, `logv` and `close` would replace the transport's methods)
  format: true, level: true, silent: true, handleExceptions: true, handleRejections: true,
};
export const TRANSPORT_OPTION_KEYS: readonly string[] = Object.keys(TRANSPORT_KEYS);

/** `createVectorLogger`'s: the transport's, but the logger's `format`, and its `defaultMeta`. */
export const LOGGER_OPTION_KEYS: readonly string[] = [...TRANSPORT_OPTION_KEYS.filter((k) => k !== 'format'), 'defaultMeta'];

/** LogSend's names (and a few other common spellings) whose match is not the nearest by letters. */
const ALIASES: Readonly<Record<string, string>> = {
  url: 'vectorUrl',
  endpoint: 'vectorUrl',
  db: 'dbPath',
  database: 'dbPath',
  path: 'dbPath',
  extra: 'extraFields',
  retries: 'maxRetries',
  flush_interval: 'flushInterval',
};

/** Units that differ from LogSend's: said with the suggestion. */
const UNITS: Readonly<Record<string, string>> = {
  flushInterval: ' (in milliseconds; LogSend took seconds)',
  retryDelay: ' (in milliseconds; LogSend took seconds)',
};

const camel = (key: string): string => key.toLowerCase().replace(/[_-]+([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Edits (insert, delete, replace, swap of two neighbours) from `a` to `b`. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The valid key a caller most likely meant, or undefined when none is close. */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  const alias = ALIASES[key] ?? ALIASES[key.toLowerCase()];
  if (alias !== undefined && known.includes(alias)) return alias;
  const asCamel = camel(key);
  const lower = asCamel.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    if (k.toLowerCase() === lower) return k;
    const d = distance(lower, k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  // Close enough to be a typo: a third of the name, at least 1, at most 3 edits.
  return bestDistance <= Math.min(3, Math.max(1, Math.floor(lower.length / 3))) ? best : undefined;
}

/** Throws a TypeError naming the first key of `options` that is not in `known`, with a suggestion. */
export function refuseUnknownKeys(options: object, known: readonly string[], what: string): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const near = nearestKey(key, known);
    const hint = near === undefined ? `; the options are listed in README, Options` : `; did you mean \`${near}\`${UNITS[near] ?? ''}?`;
    throw new TypeError(`unknown ${what} option \`${key}\`${hint}`);
  }
}
