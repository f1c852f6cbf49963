import { NO_SECRETS } from './secrets';

/** What the transport does about a delivery problem (see {@link VectorDeliveryError.action}). */
export type DeliveryAction = 'retry' | 'blocked' | 'dead-letter' | 'unanswered';

/**
 * Raised (as a `'warn'` event, or a rejected promise where the caller asked
 * for delivery) when a batch could not be delivered. The message and every
 * field are free of credentials: URLs are redacted before they get here.
 */
export class VectorDeliveryError extends Error {
  override readonly name = 'VectorDeliveryError';
  /** HTTP status of the answer, when there was one. */
  readonly status: number | undefined;
  /**
   * What the transport does about it: `retry`, `blocked`, `dead-letter` (one record moved to the
   * dead-letter table), or `unanswered` (requests got no answer and their records were sent again).
   */
  readonly action: DeliveryAction;
  /** Number of records in the request that failed. */
  readonly records: number;

  constructor(message: string, details: { status?: number; action: DeliveryAction; records: number; cause?: unknown }) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.status = details.status;
    this.action = details.action;
    this.records = details.records;
  }
}

/** Raised when the local queue (the SQLite file) cannot be used. */
export class VectorQueueError extends Error {
  override readonly name = 'VectorQueueError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Removes userinfo from any URL-looking text so credentials never leak into messages. */
export function redact(text: string): string {
  return NO_SECRETS.redact(text);
}

/**
 * Turns an error from the HTTP layer into a plain, credential-free cause.
 * axios errors carry the request config (headers, auth) and must never be kept as they are.
 */
export function safeCause(err: unknown): Error {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const clean = new Error(redact(err.message));
    clean.name = err.name === 'AxiosError' ? 'HttpError' : err.name;
    if (typeof code === 'string') (clean as Error & { code?: string }).code = code;
    return clean;
  }
  return new Error(redact(String(err)));
}
