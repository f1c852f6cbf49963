/**
 * `npx tsx bench/commit-window.ts`: the loss window of `kill -9` (and of the OOM killer, or a signal
 * with no handler): how long a record waits between its `log()` call and its commit, and so how
 * many records a process that is killed outright can lose. Logs at steady rates (BENCH_RATES,
 * records per second, default 1000,10000,50000) for 3 s each in ticks of BENCH_TICK_MS (10), with
 * the transport's defaults and BENCH_VECTOR_OPTIONS (JSON, e.g. `{"commitDelay":0}`) over them,
 * the receiver down, and reports the time from each log call to its `'logged'` event (the commit):
 * p50, p99, max, after the first 0.5 s (records logged while the file opens wait for that too:
 * reported apart).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { VectorTransport } from '../lib/index';
import { MESSAGE, record, VECTOR_OPTIONS } from './workload';

const RATES = (process.env.BENCH_RATES ?? '1000,10000,50000').split(',').map(Number);
const SECONDS = 3;
const TICK_MS = Number(process.env.BENCH_TICK_MS ?? 10);

async function measure(rate: number): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), 'wv-window-'));
  const t = new VectorTransport({ vectorUrl: 'http://127.0.0.1:9/', project: 'p', table: 't', dbPath: join(dir, 'q.db'), flushInterval: 3_600_000, ...VECTOR_OPTIONS });
  t.on('warn', () => undefined);
  const loggedAt: number[] = [];
  const waits: number[] = [];
  const startup: number[] = [];
  t.on('logged', (info: Record<string, unknown>) => {
    const i = info.user_id as number;
    (i < warm ? startup : waits).push(performance.now() - loggedAt[i]!);
  });
  const logger = winston.createLogger({ transports: [t] });
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000));
  let i = 0;
  // Records logged in the first 0.5 s wait for the file to open too: reported apart.
  let warm = Number.POSITIVE_INFINITY;
  const begin = performance.now();
  const end = begin + SECONDS * 1000;
  while (performance.now() < end) {
    if (warm === Number.POSITIVE_INFINITY && performance.now() > begin + 500) warm = i;
    for (let k = 0; k < perTick; k++, i++) {
      loggedAt[i] = performance.now();
      logger.info(MESSAGE, record(i));
    }
    await new Promise((r) => setTimeout(r, TICK_MS));
  }
  await t.committed();
  await t.close();
  rmSync(dir, { recursive: true, force: true });
  startupMax = Math.max(startupMax, ...startup);
  return waits.sort((a, b) => a - b);
}

let startupMax = 0;

const at = (xs: number[], q: number) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;

(async () => {
  console.log('| rate (records/s) | p50 ms | p99 ms | max ms | records in the window at p99 |\n|---|---|---|---|---|');
  for (const rate of RATES) {
    const w = await measure(rate);
    console.log(`| ${rate} | ${at(w, 0.5).toFixed(1)} | ${at(w, 0.99).toFixed(1)} | ${w[w.length - 1]!.toFixed(1)} | ${Math.ceil((rate * at(w, 0.99)) / 1000)} |`);
  }
  console.log(`\nRecords logged while the file was still opening (the first 0.5 s) waited at most ${startupMax.toFixed(1)} ms.`);
})();
