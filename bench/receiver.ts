/**
 * The benchmark's receiver: accepts any body with a 2xx and counts the records in it, whatever the
 * contender's format. bench/run.ts runs it in its own process, apart from the contenders'.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';

/** Counts the records in a body, whatever the contender's format. */
export function countRecords(body: Buffer, headers: http.IncomingHttpHeaders): number {
  let raw = body;
  if (headers['content-encoding'] === 'gzip') raw = zlib.gunzipSync(raw);
  if (String(headers['content-type']).includes('msgpack')) {
    const b = raw[0]!;
    if (b >= 0x90 && b <= 0x9f) return b - 0x90;
    if (b === 0xdc) return raw.readUInt16BE(1);
    if (b === 0xdd) return raw.readUInt32BE(1);
    return 1;
  }
  const text = raw.toString('utf8');
  if (String(headers['content-type']).includes('ndjson')) return text.split('\n').filter(Boolean).length;
  const value = JSON.parse(text) as unknown;
  if (Array.isArray(value)) return value.length;
  const streams = (value as { streams?: Array<{ values: unknown[] }> }).streams;
  if (streams) return streams.reduce((n, s) => n + s.values.length, 0);
  return 1;
}

/** The `t` (time of the log call) of every record in a JSON body that has one. */
function callTimes(body: Buffer, headers: http.IncomingHttpHeaders): number[] {
  let raw = body;
  if (headers['content-encoding'] === 'gzip') raw = zlib.gunzipSync(raw);
  const text = raw.toString('utf8');
  const records = (String(headers['content-type']).includes('ndjson') ? text.split('\n').filter(Boolean).map((l) => JSON.parse(l)) : JSON.parse(text)) as unknown;
  const out: number[] = [];
  for (const r of Array.isArray(records) ? records : [records]) {
    const t = (r as { t?: unknown; extra?: { t?: unknown } })?.extra?.t ?? (r as { t?: unknown })?.t;
    if (typeof t === 'number') out.push(t);
  }
  return out;
}

export class CountingReceiver {
  count = 0;
  /** When set, each record's lag (arrival minus its `t`) is kept, with its `t`. */
  lags: Array<{ t: number; lag: number }> | undefined;
  private server: http.Server | undefined;
  port = 0;
  private waiters: Array<{ n: number; resolve: (at: number) => void }> = [];

  async up(): Promise<void> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const body = Buffer.concat(chunks);
          this.count += countRecords(body, req.headers);
          if (this.lags) {
            const now = Date.now();
            for (const t of callTimes(body, req.headers)) this.lags.push({ t, lag: now - t });
          }
        } catch {
          // not a body we can read: still a 2xx, as the task says
        }
        res.writeHead(200).end();
        const now = Date.now();
        this.waiters = this.waiters.filter((w) => (this.count >= w.n ? (w.resolve(now), false) : true));
      });
    });
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** Time at which `n` records had arrived, or undefined if they did not within `timeoutMs` of no progress. */
  reached(n: number, stallMs: number): Promise<number | undefined> {
    if (this.count >= n) return Promise.resolve(Date.now());
    return new Promise((resolve) => {
      let last = this.count;
      const started = Date.now();
      const progress = process.env.BENCH_VERBOSE
        ? setInterval(() => process.stderr.write(`  ${Math.round((Date.now() - started) / 1000)}s: ${this.count}/${n}\n`), 5000)
        : undefined;
      const timer = setInterval(() => {
        if (this.count === last) {
          clearInterval(timer);
          clearInterval(progress);
          resolve(undefined);
        }
        last = this.count;
      }, stallMs);
      this.waiters.push({
        n,
        resolve: (at) => {
          clearInterval(timer);
          clearInterval(progress);
          resolve(at);
        },
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/`;
  }
}
