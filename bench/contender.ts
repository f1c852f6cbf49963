/**
 * One contender in a child process of its own (bench/run.ts starts it): builds a winston logger
 * with the contender's transport, logs the workload, and reports over IPC.
 *
 * Messages to the parent: { produced: ms, cpu } once the logger accepted (for VectorTransport:
 * committed to the queue file) every record; { rss: [...] } samples in the memory phase; { closed } at the end.
 * From the parent: 'finish' (report CPU, close, exit).
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import TransportStream from 'winston-transport';
import winston from 'winston';
import LokiTransport from 'winston-loki';
import { Logtail } from '@logtail/node';
import { LogtailTransport } from '@logtail/winston';
import { VectorTransport } from '../dist/index.js';
import { FloorTransport } from './floor';
import { MESSAGE, record, STEADY_MS, STEADY_WARMUP_MS, VECTOR_OPTIONS, WARM_UP_RECORDS } from './workload';

export type ContenderName = 'noop' | 'file' | 'http-batch' | 'http-batch1000' | 'winston-loki' | 'logtail' | 'vector' | 'vector-batch1000' | 'floor';

interface Settings {
  name: ContenderName;
  n: number;
  url: string;
  dir: string;
  /** `sync`: one synchronous loop of n calls; `steady`: `rate` calls a second in ticks of `tick` ms. */
  phase: 'throughput' | 'sync' | 'memory' | 'drain' | 'steady';
  rate?: number;
  /** The steady run's tick, in ms (10 unless given). */
  tick?: number;
}

const settings = JSON.parse(process.env.BENCH_CONTENDER!) as Settings;

class NoopTransport extends TransportStream {
  override log(_info: unknown, callback: () => void): void {
    callback();
  }
}

function transportFor(s: Settings): TransportStream & { close?: () => unknown } {
  const url = new URL(s.url);
  switch (s.name) {
    case 'noop':
      return new NoopTransport();
    case 'file':
      mkdirSync(s.dir, { recursive: true });
      return new winston.transports.File({ filename: join(s.dir, 'app.log') });
    case 'http-batch':
    case 'http-batch1000':
      return new winston.transports.Http({
        host: url.hostname,
        port: Number(url.port),
        path: '/',
        batch: true,
        batchCount: s.name === 'http-batch1000' ? 1000 : 100,
        batchInterval: 5000,
      });
    case 'winston-loki':
      return new LokiTransport({ host: s.url.replace(/\/$/, ''), json: true, batching: true, interval: 5, labels: { app: 'bench' }, gracefulShutdown: false, onConnectionError: () => undefined });
    case 'logtail':
      return new LogtailTransport(new Logtail('bench-token', { endpoint: s.url, batchSize: 1000, batchInterval: 1000, retryCount: 3, ignoreExceptions: true, throwExceptions: false }));
    case 'vector':
    case 'vector-batch1000':
      return new VectorTransport({
        vectorUrl: s.url,
        project: 'bench',
        table: 'logs',
        dbPath: join(s.dir, 'queue.db'),
        ...(s.name === 'vector-batch1000' ? { batchSize: 1000 } : {}),
        // 1M records of this workload take ~480 MB on disk: above the default 256 MiB bound, which
        // would drop (and count) the oldest. The memory run keeps them all.
        ...(s.phase === 'memory' || s.phase === 'drain' ? { maxQueueBytes: 1024 ** 3 } : {}),
        closeTimeout: s.phase === 'memory' || s.phase === 'drain' ? 0 : 60_000,
        ...VECTOR_OPTIONS,
      });
    case 'floor':
      return new FloorTransport(s.url, join(s.dir, 'queue.db'));
  }
}

/**
 * The same workload for everyone: a message with a few strings and numbers, one nested object.
 * Throughput runs log as fast as the loop goes (1000 records a tick). The memory run honours
 * the logger's stream backpressure (`write()` false → wait for 'drain'), as a service that logs
 * at a rate its transport can take would: what is measured is what the transport keeps while the
 * receiver is down, not a queue in front of it.
 */
function logWorkload(logger: winston.Logger, n: number, done: () => void, backpressure: boolean): void {
  let i = 0;
  const step = () => {
    const end = Math.min(n, i + 1000);
    for (; i < end; i++) {
      if (!backpressure) {
        logger.info(MESSAGE, record(i));
        continue;
      }
      const ok = logger.write({ level: 'info', message: MESSAGE, ...record(i), [Symbol.for('level')]: 'info' } as never);
      if (!ok) {
        i++;
        logger.once('drain', step);
        return;
      }
    }
    if (i < n) setImmediate(step);
    else done();
  };
  step();
}

/**
 * Before a flood: WARM_UP_RECORDS, and a pause once the transport has them (VectorTransport:
 * committed, so its file is open and its worker up), so every contender floods as in a service that
 * has run a while (a burst in a request handler), not while it is still opening its file or socket.
 */
async function warmUp(logger: winston.Logger, transport: TransportStream): Promise<void> {
  const { log, logv } = transport;
  const accepted = acceptedAll(transport, WARM_UP_RECORDS);
  for (let i = 0; i < WARM_UP_RECORDS; i++) logger.info(MESSAGE, record(-1 - i));
  await accepted;
  transport.log = log;
  transport.logv = logv;
  if (transport instanceof VectorTransport || transport instanceof FloorTransport) await transport.committed();
  await new Promise((resolve) => setTimeout(resolve, 100));
}

/** Resolves when the transport has called back for all `n` records. */
function acceptedAll(transport: TransportStream, n: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const orig = transport.log!.bind(transport);
    const count = () => {
      if (++seen === n) resolve();
    };
    // Every contender's log(info, callback): the callback is when it has accepted the record.
    transport.log = (info: unknown, callback: () => void) =>
      orig(info, () => {
        count();
        callback();
      });
    if (transport.logv) {
      const origv = transport.logv.bind(transport);
      transport.logv = (chunks: Array<{ chunk: unknown }>, callback: () => void) =>
        origv(chunks, () => {
          for (let k = 0; k < chunks.length; k++) count();
          callback();
        });
    }
  });
}

/** CPU ms of each thread of this process, by thread id and name (Linux: /proc/self/task; empty unless BENCH_THREADS). */
function threadCpu(): Map<string, number> {
  const out = new Map<string, number>();
  if (!process.env.BENCH_THREADS) return out;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      // schedstat: time on a CPU in ns (stat's ticks are 10 ms).
      const ns = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      const name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      out.set(`${tid} ${name}`, ns / 1e6);
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** BENCH_THREADS=1: the CPU of each thread over the measured part of a steady run, to stderr. */
function reportThreads(before: Map<string, number>, after: Map<string, number>, records: number): void {
  const byThread = new Map<string, number>();
  for (const [key, ms] of after) {
    const [tid, name] = key.split(' ');
    const label = Number(tid) === process.pid ? 'main' : `${name}#${tid}`;
    const used = ms - (before.get(key) ?? 0);
    if (used > 0) byThread.set(label, used);
  }
  const parts = [...byThread].sort((a, b) => b[1] - a[1]).map(([name, ms]) => `${name} ${ms.toFixed(0)} ms (${((ms * 1000) / records).toFixed(2)} µs/rec)`);
  process.stderr.write(`threads (${settings.name}, ${records} records): ${parts.join(', ')}\n`);
}

/**
 * `rate` calls a second, in ticks of `tick` ms (10: 20 records a tick at 2,000/s; 1: two), each
 * tick one turn of the event loop, for STEADY_MS. Each record carries the time of its call (`t`),
 * for the receiver's lag figures. Over the last STEADY_MS - STEADY_WARMUP_MS: the main thread's
 * event-loop utilization, and the CPU of the whole process (every thread) per record.
 */
async function steady(logger: winston.Logger, rate: number, tick: number): Promise<{ utilization: number; cpuUsPerRecord: number; records: number }> {
  const { performance } = await import('node:perf_hooks');
  const start = performance.now();
  let i = 0;
  let threads0: Map<string, number> | undefined;
  let mark: { elu: ReturnType<typeof performance.eventLoopUtilization>; cpu: NodeJS.CpuUsage; i: number } | undefined;
  return new Promise((resolve) => {
    const step = () => {
      const elapsed = performance.now() - start;
      const due = Math.floor((Math.min(elapsed, STEADY_MS) / 1000) * rate);
      for (; i < due; i++) logger.info(MESSAGE, { ...record(i), t: Date.now() });
      if (mark === undefined && elapsed >= STEADY_WARMUP_MS) {
        mark = { elu: performance.eventLoopUtilization(), cpu: process.cpuUsage(), i };
        threads0 = threadCpu();
      }
      if (elapsed < STEADY_MS) {
        setTimeout(step, tick);
        return;
      }
      const elu = performance.eventLoopUtilization(mark!.elu);
      const cpu = process.cpuUsage(mark!.cpu);
      const records = i - mark!.i;
      if (process.env.BENCH_THREADS) reportThreads(threads0!, threadCpu(), records);
      resolve({ utilization: elu.utilization, cpuUsPerRecord: (cpu.user + cpu.system) / records, records });
    };
    setTimeout(step, tick);
  });
}

async function main(): Promise<void> {
  const transport = transportFor(settings);
  transport.on('warn', () => undefined);
  transport.on('error', () => undefined);
  const logger = winston.createLogger({ transports: [transport] });
  logger.on('error', () => undefined);
  const send = (msg: unknown) => process.send!(msg);

  let cpu0 = process.cpuUsage();
  if (settings.phase === 'steady') {
    send({ started: Date.now() });
    send({ steady: await steady(logger, settings.rate!, settings.tick ?? 10) });
  } else if (settings.phase === 'drain') {
    // The backlog is already on disk: opening the transport ships it.
    send({ started: Date.now() });
  } else {
    if (settings.phase !== 'memory') {
      await warmUp(logger, transport);
      cpu0 = process.cpuUsage(); // the flood's CPU, not the start's
    }
    const rss: number[] = [process.memoryUsage().rss];
    const sampler = setInterval(() => rss.push(process.memoryUsage().rss), 100);
    const started = Date.now();
    send({ started });
    const accepted = acceptedAll(transport, settings.n);
    if (settings.phase === 'sync') {
      // One loop with no yield: what a burst of calls in one request handler does.
      for (let i = 0; i < settings.n; i++) logger.info(MESSAGE, record(i));
    } else {
      await new Promise<void>((resolve) => logWorkload(logger, settings.n, resolve, settings.phase === 'memory'));
    }
    await accepted;
    // VectorTransport calls back before the commit (while under its highWaterMark), the floor always:
    // their figure runs until every record is in the queue file.
    if (transport instanceof VectorTransport || transport instanceof FloorTransport) await transport.committed();
    const produced = Date.now() - started;
    clearInterval(sampler);
    rss.push(process.memoryUsage().rss);
    send({ produced, cpu: process.cpuUsage(cpu0), rss: { before: rss[0], peak: Math.max(...rss), after: rss.at(-1) } });
  }

  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  const cpu = process.cpuUsage(cpu0);
  if ('close' in transport && typeof transport.close === 'function') await transport.close();
  send({ finished: true, cpu });
  setTimeout(() => process.exit(0), 200).unref();
  process.disconnect();
}

void main();
