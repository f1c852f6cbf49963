/**
 * `npx tsx bench/steady.ts [rate ...]` (after `npm run build`): logs at a steady rate for 3 s with
 * the receiver up, and tells how large the commits were and how long after the last log call the
 * receiver held every record (a `flush()` follows the last call, so the last partial batch does not
 * wait for `flushInterval`). Shows whether shipping keeps up with a given logging rate; the receiver
 * runs in a child process of its own, as Vector would.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import winston from 'winston';
import { VectorTransport } from '../dist/index.js';
import { MESSAGE, record } from './workload';

const SECONDS = 3;

function receive(n: number): void {
  let count = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      count += (JSON.parse(zlib.gunzipSync(Buffer.concat(chunks)).toString()) as unknown[]).length;
      res.writeHead(200).end();
      if (count >= n) process.send!({ done: Date.now() });
    });
  });
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }));
  process.on('message', () => process.exit(0));
}

async function run(rate: number): Promise<void> {
  const n = rate * SECONDS;
  const receiver = fork(__filename, ['--receive', String(n)]);
  const port = await new Promise<number>((resolve) => receiver.once('message', (m: { port: number }) => resolve(m.port)));
  const received = new Promise<number>((resolve) => receiver.on('message', (m: { done?: number }) => m.done && resolve(m.done)));
  const sizes: number[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'wv-steady-'));
  const transport = new VectorTransport({ vectorUrl: `http://127.0.0.1:${port}/`, project: 'bench', table: 'steady', dbPath: join(dir, 'q.db') });
  // Each commit's size, as the transport tells it (the commits run in its delivery worker).
  transport.on('commit', (rows: number) => sizes.push(rows));
  const logger = winston.createLogger({ transports: [transport] });
  const start = Date.now();
  let i = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const due = Math.min(n, Math.floor(((Date.now() - start) / 1000) * rate));
      for (; i < due; i++) {
        logger.info(MESSAGE, record(i));
      }
      if (i < n) setTimeout(tick, 2);
      else resolve();
    };
    tick();
  });
  const lastLog = Date.now();
  // The last partial batch would otherwise wait for `flushInterval`: this measures the backlog only.
  void transport.flush();
  const done = await received;
  await transport.close();
  receiver.send('exit');
  rmSync(dir, { recursive: true, force: true });
  sizes.sort((a, b) => a - b);
  console.log(
    `${rate.toLocaleString('en-US')} records/s for ${SECONDS} s: ${sizes.length} commits, median ${sizes[sizes.length >> 1]} records, ` +
      `largest ${sizes.at(-1)}, ${sizes.filter((s) => s >= 1000).length} of 1000 or more; ` +
      `every record delivered ${done - lastLog} ms after the last log call`,
  );
}

if (process.argv[2] === '--receive') receive(Number(process.argv[3]));
else {
  void (async () => {
    const rates = process.argv.slice(2).map(Number);
    for (const rate of rates.length > 0 ? rates : [20_000, 50_000, 80_000, 100_000]) await run(rate);
  })();
}
