/**
 * `npm run bench`: every contender, the same workload, the same run; one table and bench/results.json.
 *
 * Each contender runs in a child process of its own (bench/contender.ts); this process runs the
 * receiver, which accepts any body with a 2xx and counts the records in it.
 *
 * Throughput figures are medians of BENCH_RUNS runs for every contender, run in rounds (each round
 * runs every contender once), so ratios compare runs made close together; VectorTransport's outage and
 * backlog-drain figures too. A peer's outage figure is one run: each takes 45-75 s (its producer is
 * slow while the receiver is down), and three would take the whole run past ten minutes.
 *
 * Environment: BENCH_N (records per throughput run, 100000), BENCH_RUNS (runs per figure, median; 3),
 * BENCH_MEM_N (records logged while the receiver is down, 1000000; the do-nothing transport logs them too,
 * for winston's own growth at that rate), BENCH_ONLY (comma list of contenders;
 * `floor`, bench/floor.ts, runs only when named there),
 * BENCH_CPU_PROF (a directory: each contender process writes a `node --cpu-prof` profile there, every thread
 * its own, sampled every BENCH_CPU_PROF_INTERVAL µs: 97, a period prime to the steady runs' ticks, which
 * a 1 ms sampling aliases with), BENCH_VECTOR_OPTIONS (JSON: VectorTransport options to try, over the
 * benchmark's own),
 * BENCH_PHASES (comma list: throughput, steady, memory, drain; all by default), BENCH_STEADY_RATES
 * (records/s of the steady runs, `2000,10000`), BENCH_STEADY_RUNS (their rounds, 1), BENCH_STEADY_TICK_MS
 * (their ticks, `10,1`: each tick logs its share of the rate in one turn of the event loop), BENCH_THREADS
 * (set: each steady run also tells, on stderr, the CPU of every thread of its process, busiest first).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import type { ContenderName } from './contender';
import { CountingReceiver } from './receiver';
import { STEADY_WARMUP_MS, WARM_UP_RECORDS } from './workload';

const N = Number(process.env.BENCH_N ?? 100_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const MEM_N = Number(process.env.BENCH_MEM_N ?? 1_000_000);
const ALL: ContenderName[] = ['noop', 'file', 'http-batch', 'http-batch1000', 'winston-loki', 'logtail', 'vector', 'vector-batch1000'];
const ONLY = process.env.BENCH_ONLY?.split(',') as ContenderName[] | undefined;
/** Phases to run (all by default): `throughput` (floods), `steady`, `memory` (the outage), `drain`. */
const PHASES = new Set((process.env.BENCH_PHASES ?? 'throughput,steady,memory,drain').split(','));
/** Run only when BENCH_ONLY names it: `floor` (bench/floor.ts) is a measurement of the machine, not a contender. */
const ON_REQUEST: ContenderName[] = ['floor'];
const CONTENDERS = [...ALL, ...ON_REQUEST].filter((c) => (ONLY ? ONLY.includes(c) : !ON_REQUEST.includes(c)));
const NETWORK = new Set<ContenderName>(['http-batch', 'http-batch1000', 'winston-loki', 'logtail', 'vector', 'vector-batch1000', 'floor']);
/** Keeps what it accepted across a crash (the records are on disk before the callback). */
const DURABLE = new Set<ContenderName>(['vector', 'vector-batch1000']);
/** Batch-size variants: throughput runs only (the outage run is their transport's, with defaults). */
const THROUGHPUT_ONLY = new Set<ContenderName>(['http-batch1000', 'vector-batch1000', 'floor']);

interface Report {
  started?: number;
  produced?: number;
  steady?: { utilization: number; cpuUsPerRecord: number; records: number };
  cpu?: NodeJS.CpuUsage;
  rss?: { before: number; peak: number; after: number };
}

function startContender(name: ContenderName, n: number, url: string, dir: string, phase: string, rate?: number, tick?: number) {
  const child: ChildProcess = fork(join(__dirname, 'contender.ts'), [], {
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-interval=${process.env.BENCH_CPU_PROF_INTERVAL ?? 97}`] : [])],
    env: { ...process.env, BENCH_CONTENDER: JSON.stringify({ name, n, url, dir, phase, rate, tick }) },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const report: Report = {};
  const messages: Array<(m: Record<string, unknown>) => void> = [];
  child.on('message', (m: Record<string, unknown>) => {
    Object.assign(report, m);
    for (const f of messages.splice(0)) f(m);
  });
  const next = (key: string, timeoutMs = 600_000) =>
    new Promise<void>((resolve, reject) => {
      if (key in report) return resolve();
      const timer = setTimeout(() => reject(new Error(`${name}: no '${key}' within ${timeoutMs} ms`)), timeoutMs);
      const wait = () =>
        key in report
          ? (clearTimeout(timer), resolve())
          : messages.push(wait);
      messages.push(wait);
    });
  const finish = async (): Promise<NodeJS.CpuUsage> => {
    child.send('finish');
    await next('finished', 120_000);
    return (report as { cpu: NodeJS.CpuUsage }).cpu;
  };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { report, next, finish, exited, child };
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Figures {
  producerPerSec: number;
  /** One synchronous loop of N calls (no yield), until accepted (VectorTransport: committed). */
  syncProducerPerSec?: number;
  e2ePerSec: number | null;
  cpuSecPer100k: number;
  /** Medians of `runs` runs; `received` is the fewest delivered in any of them. */
  memory?: { runs: number; records: number; rssGrowthMiB: number; peakGrowthMiB: number; received: number; drainSec: number | null };
  drainPerSec?: number;
}

/** One throughput run of one contender: records/s until accepted, until received, CPU s per 100k. */
async function throughputRun(name: ContenderName, receiver: CountingReceiver, phase: 'throughput' | 'sync' = 'throughput'): Promise<{ producer: number; e2e: number; cpu: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'wv-bench-'));
  receiver.count = 0;
  const c = startContender(name, N, receiver.url, dir, phase);
  await c.next('produced');
  const producer = (N / c.report.produced!) * 1000;
  let e2e = Number.NaN;
  if (NETWORK.has(name)) {
    // Given up after 8 s with nothing more arriving (the longest pause of a contender that still
    // delivers is winston-loki's 5 s interval): logtail, which rate-limits and never delivers all,
    // waited 15 s a round.
    const at = await receiver.reached(N + WARM_UP_RECORDS, 8_000);
    if (at !== undefined) e2e = (N / (at - c.report.started!)) * 1000;
  }
  const used = await c.finish();
  await c.exited;
  rmSync(dir, { recursive: true, force: true });
  return { producer, e2e, cpu: ((used.user + used.system) / 1e6) * (100_000 / N) };
}

/**
 * RUNS rounds, each running every contender once, in turn: a ratio compares runs made within one
 * round (~30 s here) of each other, whatever else the machine did meanwhile. Each figure is the
 * median of its runs.
 */
async function throughput(receiver: CountingReceiver): Promise<Partial<Record<ContenderName, Figures>>> {
  const runs = new Map<ContenderName, Array<{ producer: number; e2e: number; cpu: number }>>(CONTENDERS.map((name) => [name, []]));
  const sync = new Map<ContenderName, number[]>(CONTENDERS.map((name) => [name, []]));
  for (let round = 0; round < RUNS; round++) {
    for (const name of CONTENDERS) {
      process.stderr.write(`throughput: ${name} (round ${round + 1} of ${RUNS})\n`);
      runs.get(name)!.push(await throughputRun(name, receiver));
      if (!SYNC_SKIP.has(name)) sync.get(name)!.push((await throughputRun(name, receiver, 'sync')).producer);
    }
  }
  const out: Partial<Record<ContenderName, Figures>> = {};
  for (const [name, r] of runs) {
    out[name] = {
      syncProducerPerSec: sync.get(name)!.length > 0 ? median(sync.get(name)!) : undefined,
      producerPerSec: median(r.map((x) => x.producer)),
      e2ePerSec: NETWORK.has(name) ? median(r.map((x) => x.e2e)) : null,
      cpuSecPer100k: median(r.map((x) => x.cpu)),
    };
  }
  return out;
}

/** Only these run the synchronous-loop flood too: the floor, the peers the targets name, and ours (time: the whole run stays under ten minutes). */
const SYNC_SKIP = new Set<ContenderName>(['http-batch1000', 'vector-batch1000', 'winston-loki', 'logtail', 'floor']);
/** Rounds of the steady-rate runs (each 8 s a contender and rate): one by default, to stay under ten minutes. */
const STEADY_RUNS = Number(process.env.BENCH_STEADY_RUNS ?? 1);

/** Contenders of the steady-rate runs: the floor (do-nothing), the peers the targets name, and ours. */
const STEADY: ContenderName[] = ['noop', 'file', 'http-batch', 'vector'];
const STEADY_RATES = (process.env.BENCH_STEADY_RATES ?? '2000,10000').split(',').map(Number);
/**
 * Ticks of the steady runs, in ms: 10 (20 records a tick at 2,000/s: the targets are measured so),
 * and 1 (two a tick: a service that logs a record or two per request, each in a turn of its own).
 */
const STEADY_TICKS = (process.env.BENCH_STEADY_TICK_MS ?? '10,1').split(',').map(Number);
/** The steady scenarios, by key: `2000` at 10 ms ticks, `2000@1ms` at others. */
const STEADY_SCENARIOS = STEADY_TICKS.flatMap((tick) => STEADY_RATES.map((rate) => ({ rate, tick, key: tick === 10 ? String(rate) : `${rate}@${tick}ms` })));

interface SteadyFigures {
  utilization: number;
  cpuUsPerRecord: number;
  lagP50Ms?: number;
  lagP99Ms?: number;
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

/**
 * Steady rates: each contender in its own process logs `rate` calls a second in ticks of `tick` ms, RUNS
 * rounds; the medians of main-thread utilization and CPU per record over the measured seconds, and
 * for VectorTransport the lag from the log call to the receiver (p50, p99, over the measured seconds
 * of every run).
 */
async function steadyRates(receiver: CountingReceiver): Promise<Record<string, Partial<Record<ContenderName, SteadyFigures>>>> {
  const out: Record<string, Partial<Record<ContenderName, SteadyFigures>>> = {};
  const names = STEADY.filter((c) => CONTENDERS.includes(c));
  for (const { rate, tick, key } of STEADY_SCENARIOS) {
    const runs = new Map<ContenderName, Array<{ utilization: number; cpuUsPerRecord: number }>>(names.map((n) => [n, []]));
    const lags = new Map<ContenderName, number[]>(names.map((n) => [n, []]));
    for (let round = 0; round < STEADY_RUNS; round++) {
      for (const name of names) {
        process.stderr.write(`steady ${rate}/s in ${tick} ms ticks: ${name} (round ${round + 1} of ${STEADY_RUNS})\n`);
        const dir = mkdtempSync(join(tmpdir(), 'wv-bench-'));
        receiver.lags = [];
        const c = startContender(name, 0, receiver.url, dir, 'steady', rate, tick);
        await c.next('steady', 60_000);
        await c.finish();
        await c.exited;
        const from = c.report.started! + STEADY_WARMUP_MS;
        lags.get(name)!.push(...receiver.lags.filter((l) => l.t >= from).map((l) => l.lag));
        receiver.lags = undefined;
        rmSync(dir, { recursive: true, force: true });
        runs.get(name)!.push(c.report.steady!);
      }
    }
    out[key] = {};
    for (const name of names) {
      const r = runs.get(name)!;
      const l = lags.get(name)!;
      out[key]![name] = {
        utilization: median(r.map((x) => x.utilization)),
        cpuUsPerRecord: median(r.map((x) => x.cpuUsPerRecord)),
        ...(NETWORK.has(name) && l.length > 0 ? { lagP50Ms: percentile(l, 50), lagP99Ms: percentile(l, 99) } : {}),
      };
    }
  }
  return out;
}

/** `memoryRun` `runs` times: the median of each figure, and the fewest records delivered. */
async function memory(name: ContenderName, receiver: CountingReceiver, runs: number): Promise<Figures['memory']> {
  const all: Array<NonNullable<Awaited<ReturnType<typeof memoryRun>>>> = [];
  for (let run = 0; run < runs; run++) all.push(await memoryRun(name, receiver));
  const drained = all.map((m) => m.drainSec);
  const tenth = (x: number) => Math.round(x * 10) / 10; // a median of an even count is a mean
  return {
    runs,
    records: MEM_N,
    rssGrowthMiB: tenth(median(all.map((m) => m.rssGrowthMiB))),
    peakGrowthMiB: tenth(median(all.map((m) => m.peakGrowthMiB))),
    received: Math.min(...all.map((m) => m.received)),
    // A run that never delivered everything has no drain time: then neither has the median.
    drainSec: drained.includes(null) ? null : tenth(median(drained as number[])),
  };
}

/** MEM_N records logged while the receiver is down; then it comes back. */
async function memoryRun(name: ContenderName, receiver: CountingReceiver) {
  const dir = mkdtempSync(join(tmpdir(), 'wv-bench-'));
  await receiver.down();
  receiver.count = 0;
  const c = startContender(name, MEM_N, receiver.url, dir, 'memory');
  await c.next('produced');
  const rss = c.report.rss!;
  const back = Date.now();
  await receiver.up();
  // A contender that sends nothing (the do-nothing transport, the floor) has nothing to deliver.
  const at = NETWORK.has(name) ? await receiver.reached(MEM_N, 40_000) : undefined;
  await c.finish().catch(() => undefined);
  c.child.kill('SIGKILL');
  await c.exited;
  rmSync(dir, { recursive: true, force: true });
  const mib = (b: number) => Math.round((b / 1048576) * 10) / 10;
  return {
    rssGrowthMiB: mib(rss.after - rss.before),
    peakGrowthMiB: mib(rss.peak - rss.before),
    received: receiver.count,
    drainSec: at === undefined ? null : Math.round((at - back) / 100) / 10,
  };
}

/** A backlog of MEM_N records on disk, logged while the receiver is down (made once, copied for each drain). */
async function backlog(receiver: CountingReceiver): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'wv-bench-'));
  await receiver.down();
  const fill = startContender('vector', MEM_N, receiver.url, dir, 'memory');
  await fill.next('produced');
  await fill.finish();
  await fill.exited;
  return dir;
}

/** A copy of the backlog in `source`, shipped by a fresh transport. */
async function drain(receiver: CountingReceiver, source: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'wv-bench-'));
  cpSync(source, dir, { recursive: true });
  await receiver.down();
  await receiver.up();
  receiver.count = 0;
  const c = startContender('vector', MEM_N, receiver.url, dir, 'drain');
  await c.next('started');
  const at = await receiver.reached(MEM_N, 30_000);
  await c.finish();
  await c.exited;
  rmSync(dir, { recursive: true, force: true });
  return at === undefined ? Number.NaN : (MEM_N / (at - c.report.started!)) * 1000;
}

async function main(): Promise<void> {
  const began = Date.now();
  const receiver = new CountingReceiver();
  await receiver.up();
  const results: Partial<Record<ContenderName, Figures>> = PHASES.has('throughput') ? await throughput(receiver) : {};
  for (const name of CONTENDERS) results[name] ??= { producerPerSec: Number.NaN, e2ePerSec: null, cpuSecPer100k: Number.NaN };
  const steady = PHASES.has('steady') ? await steadyRates(receiver) : {};
  // The do-nothing transport's growth is winston's own at that rate: the floor of the column.
  for (const name of CONTENDERS.filter((c) => PHASES.has('memory') && ((NETWORK.has(c) && !THROUGHPUT_ONLY.has(c)) || c === 'noop'))) {
    process.stderr.write(`memory with the receiver down: ${name}\n`);
    results[name]!.memory = await memory(name, receiver, DURABLE.has(name) ? RUNS : 1);
  }
  if (CONTENDERS.includes('vector') && PHASES.has('drain')) {
    process.stderr.write('drain of a backlog on disk: vector\n');
    const rates: number[] = [];
    const source = await backlog(receiver);
    for (let run = 0; run < RUNS; run++) rates.push(await drain(receiver, source));
    rmSync(source, { recursive: true, force: true });
    results.vector!.drainPerSec = median(rates);
  }
  await receiver.down();

  const file = results.file?.producerPerSec;
  const fileSync = results.file?.syncProducerPerSec;
  const ceiling = results.noop?.producerPerSec;
  const ceilingSync = results.noop?.syncProducerPerSec;
  const fmt = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? '-' : Math.round(x).toLocaleString('en-US'));
  const ratio = (x: number | undefined) => (file && x ? `${(x / file).toFixed(2)}×` : '-');
  const rows = CONTENDERS.map((name) => {
    const f = results[name]!;
    const m = f.memory;
    return [
      name,
      DURABLE.has(name) ? 'yes' : 'no',
      fmt(f.producerPerSec),
      ratio(f.producerPerSec),
      ceiling ? `${(f.producerPerSec / ceiling).toFixed(2)}×` : '-',
      f.syncProducerPerSec === undefined ? '-' : `${fmt(f.syncProducerPerSec)} (${fileSync ? (f.syncProducerPerSec / fileSync).toFixed(2) : '-'}× File, ${ceilingSync ? (f.syncProducerPerSec / ceilingSync).toFixed(2) : '-'}× ceiling)`,
      fmt(f.e2ePerSec),
      f.cpuSecPer100k.toFixed(2),
      m ? `${m.rssGrowthMiB} (peak ${m.peakGrowthMiB})` : '-',
      m && NETWORK.has(name) ? `${m.received.toLocaleString('en-US')}/${m.records.toLocaleString('en-US')}${m.drainSec === null ? '' : ` in ${m.drainSec}s`}` : '-',
    ];
  });
  const head = ['contender', 'keeps across crash', 'producer rec/s, 1000 a tick', 'vs File', 'vs ceiling', 'producer rec/s, one loop', 'end-to-end rec/s', 'CPU s/100k', `RSS growth MiB, ${MEM_N.toLocaleString('en-US')} while down`, 'delivered after outage'];
  const table = [head, head.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  console.log(`\n${table}\n`);
  // Steady rates: above the floor (winston with a do-nothing transport), as ratios to File (the
  // main thread) and to Http with batch 100 (CPU of every thread).
  const steadyRows: string[][] = [];
  for (const { rate, tick, key } of STEADY_SCENARIOS.filter((x) => steady[x.key])) {
    const r = steady[key]!;
    const floor = r.noop;
    for (const name of STEADY.filter((c) => r[c])) {
      const f = r[name]!;
      const util = floor ? f.utilization - floor.utilization : Number.NaN;
      const cpu = floor ? f.cpuUsPerRecord - floor.cpuUsPerRecord : Number.NaN;
      const fileUtil = r.file && floor ? r.file.utilization - floor.utilization : Number.NaN;
      const httpCpu = r['http-batch'] && floor ? r['http-batch'].cpuUsPerRecord - floor.cpuUsPerRecord : Number.NaN;
      steadyRows.push([
        `${rate.toLocaleString('en-US')}${tick === 10 ? '' : ` (${tick} ms ticks)`}`,
        name,
        `${(f.utilization * 100).toFixed(1)}%`,
        name === 'noop' ? '-' : `${(util * 100).toFixed(1)}%${name === 'file' ? '' : ` (${(util / fileUtil).toFixed(2)}× File)`}`,
        f.cpuUsPerRecord.toFixed(1),
        name === 'noop' ? '-' : `${cpu.toFixed(1)}${name === 'http-batch' ? '' : ` (${(cpu / httpCpu).toFixed(2)}× Http)`}`,
        f.lagP50Ms === undefined ? '-' : `${f.lagP50Ms} / ${f.lagP99Ms}`,
      ]);
    }
  }
  const steadyHead = ['logs/s', 'contender', 'main-thread utilization', 'above the floor', 'CPU µs/record (all threads)', 'above the floor', 'lag p50 / p99 ms'];
  console.log([steadyHead, steadyHead.map(() => '---'), ...steadyRows].map((r) => `| ${r.join(' | ')} |`).join('\n') + '\n');
  if (results.vector?.drainPerSec) console.log(`Drain of a ${MEM_N.toLocaleString('en-US')}-record backlog on disk (vector, defaults): ${fmt(results.vector.drainPerSec)} rec/s`);
  console.log(
    `Machine: ${machine}. N=${N}, median of ${RUNS} runs (the outage column: VectorTransport's too, each peer's one run). Took ${Math.round((Date.now() - began) / 1000)} s.`,
  );
  writeFileSync(
    join(__dirname, 'results.json'),
    `${JSON.stringify({ date: new Date().toISOString(), machine, n: N, runs: RUNS, memN: MEM_N, results, steady }, null, 2)}\n`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
