import http from 'node:http';
import https from 'node:https';
import { promisify } from 'node:util';
import { gzip as gzipCb, gzipSync } from 'node:zlib';
import axios, { type AxiosInstance } from 'axios';
import { redact, safeCause } from './errors';
import { type Action, classifyStatus, parseRetryAfter } from './policy';

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

/** The outcome of one request, tagged with what to do next. */
export interface ShipResult {
  readonly action: Action;
  /** HTTP status, when an answer came. */
  readonly status?: number;
  /** From `Retry-After`, in ms. */
  readonly retryAfter?: number;
  /** A short, credential-free description of what went wrong. */
  readonly detail?: string;
  readonly cause?: Error;
}

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
      maxContentLength: 1024 * 1024,
      responseType: 'text',
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
    try {
      const res = await this.client.post(this.options.url, payload, { signal: controller.signal });
      const action = classifyStatus(res.status);
      if (action === 'delivered') return { action, status: res.status };
      const body = typeof res.data === 'string' ? res.data.slice(0, 500) : '';
      return {
        action,
        status: res.status,
        retryAfter: parseRetryAfter(res.headers['retry-after']),
        detail: redact(`HTTP ${res.status}${body ? `: ${body}` : ''}`),
      };
    } catch (err) {
      const cause = safeCause(err);
      if (timedOut) return { action: 'retry', detail: `timeout: no answer within ${this.options.timeout} ms`, cause };
      const code = (cause as Error & { code?: string }).code;
      return { action: 'retry', detail: `${code ?? cause.name}: ${cause.message}`, cause };
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
