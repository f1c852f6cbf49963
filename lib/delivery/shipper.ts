import http from 'node:http';
import https from 'node:https';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';
import zlib, { gzip as gzipCb, gzipSync } from 'node:zlib';
import axios, { type AxiosInstance } from 'axios';
import { safeCause } from '../errors';
import { type Action, classifyStatus, parseRetryAfter } from './policy';
import { NO_SECRETS, type Secrets } from '../secrets';

const gzip = promisify(gzipCb);

/** Bodies up to this many characters are compressed on the main thread: cheaper than a trip to libuv's pool. */
const SYNC_GZIP_MAX = 256 * 1024;

/**
 * gzip at level 1: ~2.5× less CPU than zlib's default 6, for bodies a few percent larger (log
 * records repeat their keys, which the fastest level already finds).
 */
function compress(text: string): Buffer | Promise<Buffer> {
  return text.length <= SYNC_GZIP_MAX ? gzipSync(text, { level: 1 }) : gzip(text, { level: 1 });
}

/** A 2xx: the batch is delivered, whatever the body says. */
export interface Delivered {
  readonly action: 'delivered';
  readonly status: number;
  readonly detail?: undefined;
  readonly retryAfter?: undefined;
  readonly cause?: undefined;
  readonly unanswered?: undefined;
}

/** Any other answer, with what it means for the batch (lib/delivery/policy.ts). */
export interface Refused {
  readonly action: Exclude<Action, 'delivered'>;
  readonly status: number;
  /** From `Retry-After`, in ms. */
  readonly retryAfter?: number;
  /** A short, credential-free description: the status and the start of the body. */
  readonly detail: string;
  readonly cause?: undefined;
  readonly unanswered?: undefined;
}

/** No answer came (a network error, a timeout, a queue error before sending): sent again with backoff. */
export interface NoAnswer {
  readonly action: 'retry';
  readonly status?: undefined;
  readonly retryAfter?: undefined;
  /** A short, credential-free description of what went wrong. */
  readonly detail: string;
  readonly cause?: Error;
  /**
   * The request was sent (or may have been) and no answer came: a timeout, or the connection closed
   * before the answer. The receiver may have accepted it, so its records may arrive twice.
   */
  readonly unanswered: boolean;
}

/** The outcome of one request, by what to do next. */
export type ShipResult = Delivered | Refused | NoAnswer;

/** What ends a round of delivery. */
export type ShipFailure = Refused | NoAnswer;

/** Bytes of a non-2xx answer read for its message; the rest is not read. */
const ERROR_BODY_BYTES = 4096;

/** Errors that come before a request reaches the receiver: nothing can have arrived. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ERR_INVALID_URL', 'ERR_TLS_CERT_ALTNAME_INVALID', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_HAS_EXPIRED']);

/** What the scheduler needs of a shipper. */
export interface Shipper {
  send(bodies: readonly string[], signal?: AbortSignal): Promise<ShipResult>;
  close(): void;
}

export interface HttpShipperOptions {
  readonly url: string;
  readonly authorization: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly timeout: number;
  readonly body: 'json' | 'ndjson';
  readonly compression: 'gzip' | 'none';
  /** For https with a private CA: passed to the https agent (`ca`, `rejectUnauthorized`, …). */
  readonly tls?: https.AgentOptions;
  /** Taken out of every detail and cause, also when the receiver echoes them. */
  readonly secrets?: Secrets;
}

/** Body text from already-serialized records: nothing is encoded twice. */
export function encodeBody(bodies: readonly string[], format: 'json' | 'ndjson'): string {
  return format === 'json' ? `[${bodies.join(',')}]` : `${bodies.join('\n')}\n`;
}

/** Sends batches with axios over keep-alive connections, one POST each. */
export class HttpShipper implements Shipper {
  private readonly client: AxiosInstance;
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  private readonly httpsAgent: https.Agent;

  constructor(private readonly options: HttpShipperOptions) {
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 1, ...options.tls });
    const headers: Record<string, string> = {
      'Content-Type': options.body === 'json' ? 'application/json' : 'application/x-ndjson',
      'User-Agent': 'winston-vector',
      ...options.headers,
    };
    if (options.compression === 'gzip') headers['Content-Encoding'] = 'gzip';
    if (options.authorization !== undefined) headers.Authorization = options.authorization;
    this.client = axios.create({
      headers,
      timeout: options.timeout,
      maxRedirects: 0,
      maxBodyLength: Infinity,
      // A 2xx means delivered whatever its body: bodies are never decompressed, parsed or sized up
      // by axios; the shipper drains a 2xx's body and reads a few KiB of any other (`readSome`).
      maxContentLength: -1,
      decompress: false,
      responseType: 'stream',
      transformResponse: (data: unknown) => data,
      validateStatus: () => true,
      httpAgent: this.httpAgent,
      httpsAgent: this.httpsAgent,
      proxy: false,
    });
  }

  async send(bodies: readonly string[], signal?: AbortSignal): Promise<ShipResult> {
    const text = encodeBody(bodies, this.options.body);
    const payload = this.options.compression === 'gzip' ? await compress(text) : Buffer.from(text);
    // axios' own timeout only sees an idle socket; this deadline bounds the whole request.
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.options.timeout);
    timer.unref();
    const onAbort = () => controller.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) controller.abort();
    const secrets = this.options.secrets ?? NO_SECRETS;
    try {
      const res = await this.client.post<Readable>(this.options.url, payload, { signal: controller.signal });
      const action = classifyStatus(res.status);
      if (action === 'delivered') {
        discard(res.data, this.options.timeout);
        return { action, status: res.status };
      }
      const body = await readSome(res.data, ERROR_BODY_BYTES, res.headers['content-encoding']);
      return {
        action,
        status: res.status,
        retryAfter: parseRetryAfter(res.headers['retry-after']),
        detail: secrets.redact(`HTTP ${res.status}${body ? `: ${body.slice(0, 500)}` : ''}`),
      };
    } catch (err) {
      const cause = secrets.redactError(safeCause(err));
      if (timedOut) return { action: 'retry', detail: `timeout: no answer within ${this.options.timeout} ms`, cause, unanswered: true };
      const code = (cause as Error & { code?: string }).code;
      const unanswered = code === undefined || !NOT_SENT.has(code);
      return { action: 'retry', detail: secrets.redact(`${code ?? cause.name}: ${cause.message}`), cause, unanswered };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}

/**
 * Reads a 2xx's body to its end and throws it away, so the connection can carry the next request;
 * a body still coming after `timeoutMs` is cut off with its connection.
 */
function discard(stream: Readable, timeoutMs: number): void {
  const timer = setTimeout(() => stream.destroy(), timeoutMs);
  timer.unref();
  const done = () => clearTimeout(timer);
  stream.on('error', done);
  stream.on('close', done);
  stream.on('end', done);
  stream.resume();
}

/**
 * Up to `limit` bytes of an error answer's body, as text for its message: decompressed as far as
 * those bytes go when it says gzip or deflate. Never throws; the rest of the body is not read.
 */
function readSome(stream: Readable, limit: number, encoding: unknown): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.destroy();
      resolve(decodeSome(Buffer.concat(chunks).subarray(0, limit), encoding));
    };
    const timer = setTimeout(finish, 2000);
    timer.unref();
    stream.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= limit) finish();
    });
    stream.on('end', finish);
    stream.on('error', finish);
    stream.on('close', finish);
  });
}

function decodeSome(raw: Buffer, encoding: unknown): string {
  const enc = typeof encoding === 'string' ? encoding.trim().toLowerCase() : '';
  if (enc === '' || enc === 'identity') return raw.toString('utf8');
  const partial = { finishFlush: zlib.constants.Z_SYNC_FLUSH };
  try {
    if (enc === 'gzip' || enc === 'x-gzip') return zlib.gunzipSync(raw, partial).toString('utf8');
    if (enc === 'deflate') return zlib.inflateSync(raw, partial).toString('utf8');
    if (enc === 'br') return zlib.brotliDecompressSync(raw, { finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH }).toString('utf8');
  } catch {
    // fall through
  }
  return `(a ${raw.length}-byte body in ${JSON.stringify(enc)} that could not be read)`;
}
