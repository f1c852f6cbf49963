/**
 * What an answer from Vector's `http_server` source means for the batch
 * (as read from Vector's source, src/sources/util/http/prelude.rs):
 * - `delivered`: 2xx, delete the batch;
 * - `retry`: 408, 429, 5xx, or no answer (timeout, refused, reset): send again with backoff;
 * - `split`: 413, the body is too large: send the halves;
 * - `rejected`: 400, some record cannot be decoded or a sink rejected it: bisect to find it;
 * - `blocked`: any other answer (401, 403, 404, 405, 415, 422, 3xx, other 4xx): a configuration
 *   problem; keep the records and back off at the cap until the answer changes.
 */
export type Action = 'delivered' | 'retry' | 'split' | 'rejected' | 'blocked';

export function classifyStatus(status: number): Action {
  if (status >= 200 && status < 300) return 'delivered';
  if (status === 408 || status === 429 || status >= 500) return 'retry';
  if (status === 413) return 'split';
  if (status === 400) return 'rejected';
  return 'blocked';
}

/**
 * `Retry-After` as milliseconds from `now`: delta-seconds or an HTTP date; undefined when absent
 * or unreadable. Never negative.
 */
export function parseRetryAfter(header: unknown, now = Date.now()): number | undefined {
  if (typeof header !== 'string' || header.trim() === '') return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // An HTTP date names its day and month; this keeps "-3" or "2" from parsing as a year.
  if (!/[a-z]{3}/i.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** Exponential backoff with full jitter: uniform in [0, min(cap, base · 2^attempt)]. */
export function backoffDelay(attempt: number, base: number, cap: number, random: () => number = Math.random): number {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.round(random() * ceiling);
}
