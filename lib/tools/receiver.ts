/**
 * A stand-in for Vector's `http_server` source, built from its Rust source (src/sources/http_server.rs):
 * the same checks in the same order, the same status codes and error bodies, the same decoding.
 * The tests, `winston-vector receive` and `winston-vector demo` run against it, so that the package
 * can be tried and tested with no Vector installed.
 *
 * Not modelled: `snappy` and `zstd` Content-Encoding (Node has no decoder for them; the transport
 * never sends them), and acknowledgements to real sinks (scripted with `reject()` and `script()`).
 */
import { EventEmitter } from 'node:events';
import { isUtf8 } from 'node:buffer';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';

export type Decoding =
  /** `decoding.codec = "json"` with newline framing (the README's config). */
  | 'json'
  /** Legacy `encoding = "json"`, or `framing.method = "bytes"`: the whole body is one JSON value. */
  | 'json-bytes'
  /** No decoding config: each line's raw text lands in `message`. */
  | 'bytes';

export interface ReceiverOptions {
  decoding?: Decoding;
  /** Default `/`. */
  path?: string;
  /** Vector's `strict_path`: 404 for a path other than `path`. Default true, as Vector. */
  strictPath?: boolean;
  /** Basic auth Vector will demand. */
  auth?: { username: string; password: string };
  /** Default 100 MiB, applied to the raw and the decompressed body. */
  maxBodyBytes?: number;
  /** Default 200. */
  responseCode?: number;
  /** Serve https with this key and certificate. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** Headers every request must carry exactly (a bearer token, say), else 401. */
  requireHeaders?: Record<string, string>;
  /** Address to listen on. Default `127.0.0.1`. */
  host?: string;
  /** Keep every event in `events` (tests); a long-running receiver only emits them. Default true. */
  keepEvents?: boolean;
}

/** A scripted answer, used once per request until `times` runs out. */
export interface ScriptedAnswer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
  times?: number;
}

export interface ReceivedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly rawBytes: number;
  readonly status: number;
  readonly events: number;
  /** The events the body decoded to, whatever the answer was. */
  readonly decoded: ReadonlyArray<Record<string, unknown>>;
}

type Event = Record<string, unknown>;

export class VectorReceiver extends EventEmitter {
  readonly events: Event[] = [];
  readonly requests: ReceivedRequest[] = [];
  private server: http.Server | undefined;
  private port = 0;
  private readonly options: Required<Omit<ReceiverOptions, 'auth' | 'tls' | 'requireHeaders'>> &
    Pick<ReceiverOptions, 'auth' | 'tls' | 'requireHeaders'>;
  /** Events received so far, also when they are not kept. */
  received = 0;
  private scripted: ScriptedAnswer[] = [];
  private rejectWhen: ((event: Event) => boolean) | undefined;
  /** How many more responses to hold: 0 none, Infinity all. */
  private holding = 0;
  private held: Array<{ send: () => void; res: http.ServerResponse }> = [];
  private delayMs = 0;

  constructor(options: ReceiverOptions = {}) {
    super();
    this.options = {
      decoding: options.decoding ?? 'json',
      path: options.path ?? '/',
      strictPath: options.strictPath ?? true,
      auth: options.auth,
      tls: options.tls,
      requireHeaders: options.requireHeaders,
      host: options.host ?? '127.0.0.1',
      keepEvents: options.keepEvents ?? true,
      maxBodyBytes: options.maxBodyBytes ?? 100 * 1024 * 1024,
      responseCode: options.responseCode ?? 200,
    };
  }

  /** Listens on 127.0.0.1, on `port` or (default) on a free one. */
  async start(port = this.port): Promise<this> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
    const server = this.options.tls ? https.createServer(this.options.tls, handler) : http.createServer(handler);
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.options.host, () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    const host = this.options.host === '0.0.0.0' || this.options.host === '::' ? '127.0.0.1' : this.options.host;
    return `${this.options.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${this.port}${this.options.path}`;
  }

  /** Stops listening and drops open connections: clients then see connection refused. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.failHeld(503);
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Answers the next requests with these, in order (each `times`, default 1), then normally again. */
  script(...answers: ScriptedAnswer[]): void {
    this.scripted.push(...answers.map((a) => ({ ...a, times: a.times ?? 1 })));
  }

  /** Like a sink that permanently rejects some events, with acknowledgements on: 400 for the whole request. */
  rejectEvents(predicate: ((event: Event) => boolean) | undefined): void {
    this.rejectWhen = predicate;
  }

  /** Holds every response (as Vector does under backpressure) until `release()`. */
  hold(): void {
    this.holding = Number.POSITIVE_INFINITY;
  }

  /** Holds the next `n` responses only. */
  holdNext(n: number): void {
    this.holding = n;
  }

  /** Number of responses held now. */
  get heldCount(): number {
    return this.held.length;
  }

  /** Answers the held requests as they would have been answered, and stops holding. */
  release(): void {
    this.holding = 0;
    const held = this.held;
    this.held = [];
    for (const h of held) h.send();
  }

  /** Answers the held requests with `status` instead: their events are not accepted. */
  failHeld(status = 503): void {
    this.holding = 0;
    const held = this.held;
    this.held = [];
    for (const { res } of held) {
      if (res.destroyed) continue;
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ code: status, message: 'held, then failed' }));
    }
  }

  /** Delays every answer by `ms`. */
  delay(ms: number): void {
    this.delayMs = ms;
  }

  /** Resolves once `n` events have arrived, or rejects after `timeoutMs`. */
  waitForEvents(n: number, timeoutMs = 10_000): Promise<Event[]> {
    if (this.received >= n) return Promise.resolve(this.events);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('events', check);
        reject(new Error(`timed out waiting for ${n} events, have ${this.received}`));
      }, timeoutMs);
      const check = () => {
        if (this.received < n) return;
        clearTimeout(timer);
        this.off('events', check);
        resolve(this.events);
      };
      this.on('events', check);
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    let raw = 0;
    for await (const chunk of req) {
      raw += (chunk as Buffer).length;
      chunks.push(chunk as Buffer);
    }
    const answer = await this.answer(req, Buffer.concat(chunks));
    if (this.options.keepEvents) this.requests.push({
      method: req.method ?? '',
      path: req.url ?? '',
      headers: req.headers,
      rawBytes: raw,
      status: answer.status,
      events: answer.status >= 200 && answer.status < 300 ? (answer.events?.length ?? 0) : 0,
      decoded: answer.events ?? [],
    });
    const send = () => {
      if (answer.status >= 200 && answer.status < 300 && answer.events) {
        if (this.options.keepEvents) this.events.push(...answer.events);
        this.received += answer.events.length;
        this.emit('events', answer.events);
      }
      if (res.destroyed) return;
      res.writeHead(answer.status, answer.headers ?? {});
      res.end(answer.body ?? '');
    };
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.holding > 0) {
      this.holding--;
      this.held.push({ send, res });
    } else send();
  }

  private answer(
    req: http.IncomingMessage,
    body: Buffer,
  ): { status: number; body?: string; headers?: Record<string, string>; events?: Event[] } {
    const json = (status: number, message: string) => ({
      status,
      body: JSON.stringify({ code: status, message }),
      headers: { 'Content-Type': 'application/json' },
    });
    const text = (status: number, message: string) => ({ status, body: message, headers: { 'Content-Type': 'text/plain' } });
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    const prefix = this.options.path;

    if (req.method === 'GET' && path === '/ping') return text(200, 'pong');
    if (path !== prefix && this.options.strictPath && path.startsWith(prefix)) return json(404, 'Not found');
    if (req.method !== 'POST' || !path.startsWith(prefix)) return text(405, 'HTTP method not allowed');
    if (body.length > this.options.maxBodyBytes) return text(413, `Request body exceeds limit of ${this.options.maxBodyBytes} bytes.`);
    for (const [name, value] of Object.entries(this.options.requireHeaders ?? {})) {
      if (req.headers[name.toLowerCase()] !== value) return json(401, 'Invalid credentials');
    }
    if (this.options.auth) {
      const header = req.headers.authorization;
      if (!header) return json(401, 'No authorization header');
      const expected = `Basic ${Buffer.from(`${this.options.auth.username}:${this.options.auth.password}`).toString('base64')}`;
      if (header !== expected) return json(401, 'Invalid username/password');
    }

    let decoded = body;
    const encodings = (req.headers['content-encoding'] ?? '').split(',').map((e) => e.trim()).filter(Boolean);
    for (const encoding of encodings.reverse()) {
      try {
        if (encoding === 'identity') continue;
        if (encoding === 'gzip') decoded = zlib.gunzipSync(decoded, { maxOutputLength: this.options.maxBodyBytes + 1 });
        else if (encoding === 'deflate') decoded = zlib.inflateSync(decoded, { maxOutputLength: this.options.maxBodyBytes + 1 });
        else return json(415, `Unsupported encoding ${encoding}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
          return text(413, `Request body exceeds limit of ${this.options.maxBodyBytes} bytes.`);
        }
        return json(422, `Failed decompressing payload with ${encoding} decoder.`);
      }
    }
    if (decoded.length > this.options.maxBodyBytes) return text(413, `Request body exceeds limit of ${this.options.maxBodyBytes} bytes.`);

    let events: Event[];
    try {
      // serde_json reads bytes: invalid UTF-8 fails to decode (Node would make it U+FFFD).
      if (this.options.decoding !== 'bytes' && !isUtf8(decoded)) throw new Error('invalid unicode code point');
      events = this.decode(decoded.toString('utf8'));
    } catch (err) {
      return json(400, `Failed decoding body: ${(err as Error).message}`);
    }
    const now = new Date().toISOString();
    for (const e of events) {
      e.source_type ??= 'http_server';
      e.path ??= path;
      e.timestamp ??= now;
    }

    const scripted = this.scripted[0];
    if (scripted) {
      scripted.times = (scripted.times ?? 1) - 1;
      if (scripted.times <= 0) this.scripted.shift();
      return { status: scripted.status, body: scripted.body ?? '', headers: scripted.headers ?? {}, events };
    }
    if (this.rejectWhen && events.some((e) => this.rejectWhen!(e))) return { ...json(400, 'Contents failed to deliver to sink'), events };
    return { status: this.options.responseCode, events };
  }

  private decode(text: string): Event[] {
    const spread = (value: unknown): Event[] => {
      if (Array.isArray(value)) return value.map((v) => (typeof v === 'object' && v !== null ? v : { message: v }) as Event);
      return [(typeof value === 'object' && value !== null ? value : { message: value }) as Event];
    };
    switch (this.options.decoding) {
      case 'bytes':
        return text.split('\n').filter((l) => l !== '').map((message) => ({ message }));
      case 'json-bytes': {
        try {
          return spread(strictParse(text));
        } catch (err) {
          // serde_json reads the first value, then complains about what follows it.
          const firstLine = text.slice(0, text.indexOf('\n'));
          if (text.includes('\n') && isJson(firstLine)) throw new Error('trailing characters at line 2 column 1');
          throw err;
        }
      }
      case 'json':
        return text
          .split('\n')
          .filter((l) => l.trim() !== '')
          .flatMap((line, i) => spread(strictParse(line, i + 1)));
    }
  }
}

/**
 * JSON.parse, refusing what serde_json refuses and JSON.parse takes: a `\udXXX` escape that is not
 * half of a surrogate pair (Node's JSON.stringify writes exactly those for lone surrogates).
 */
function strictParse(text: string, line = 1): unknown {
  const value: unknown = JSON.parse(text);
  if (!wellFormedDeep(value)) throw new Error(`lone leading surrogate in hex escape at line ${line}`);
  return value;
}

function wellFormedDeep(value: unknown): boolean {
  if (typeof value === 'string') return value.isWellFormed();
  if (value === null || typeof value !== 'object') return true;
  if (Array.isArray(value)) return value.every(wellFormedDeep);
  for (const [k, v] of Object.entries(value)) if (!k.isWellFormed() || !wellFormedDeep(v)) return false;
  return true;
}

function isJson(text: string): boolean {
  try {
    strictParse(text);
    return true;
  } catch {
    return false;
  }
}
