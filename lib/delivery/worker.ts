/**
 * The delivery worker: one thread per process (started by lib/delivery/thread.ts) that owns every
 * transport's SQLite connection, scheduler and shipper, so the application's main thread does only
 * what must happen there (winston's call, building the record, handing its bytes over).
 *
 * Each transport is a `tid`. Messages from the main thread: `open` (the file, the options, the
 * transport's shared flags), `chunk` (one of the transport's pooled chunks, once each), `append` (a
 * batch of records to commit that could not go through the ring in shared memory, see RING_WRITE in
 * lib/delivery/thread.ts, where most batches come: not answered, its end is told in the shared
 * flags, and a failure with `append-failed`), `ended` (answered once the commit of a
 * batch ended: only when the main thread waits for it), `flush`, `pending`, `stats`, `close`,
 * `exec` (a test seam). Every request with an `id` gets one `reply`. Unasked: `opened`,
 * `open-failed`, `foreign`, `warn`, `drop`, `append-failed`, `commit` (the rows of a commit, for
 * 'commit' listeners), `recovered`, `restored`.
 *
 * The main thread hands over what a turn of its event loop logged, at the end of that turn (a
 * timer there would wake its event loop once a commit). A few records wait here up to
 * `commitDelay` ms for more (see `hold`), so a service that logs a record or two a turn pays for a
 * commit every few ms, not one a turn.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { RecordBatch } from './batch';
import {
  BURST_ROWS,
  COMMIT_NOW_ROWS,
  FLAG_COMMITTED_SEQ,
  FLAG_ENDED,
  FLAG_ENDED_SEQ,
  FLAG_FAILED,
  FLAG_HOLDING,
  inBurst,
  reached,
  RING_ENTRY,
  RING_HEADER,
  RING_LAST,
  RING_NOW,
  RING_READ,
  RING_SLOTS,
  RING_TELL,
  RING_WRITE,
  type FromWorker,
  type ToWorker,
  type WireCause,
} from './thread';
import type { VectorDeliveryError } from '../errors';
import { resolveOptions, type ResolvedOptions, type VectorTransportOptions } from '../winston/options';
import { ForeignFileError, openQueue } from '../queue/open';
import type { SqliteQueue } from '../queue/queue';
import { noticeRecord, recordContext, type RecordContext } from '../winston/record';
import { Scheduler } from './scheduler';
import { HttpShipper } from './shipper';
import { guardStatements } from '../queue/sqlite';
import { claimSpills } from '../queue/spill';

/** Backoff between attempts to open the queue file, in ms. */
const OPEN_RETRY_BASE_MS = 250;
const OPEN_RETRY_MAX_MS = 30_000;

interface Runtime {
  readonly queue: SqliteQueue;
  readonly scheduler: Scheduler;
}

interface Transport {
  readonly tid: number;
  readonly config: ResolvedOptions;
  /** Shared with the main thread (see FLAG_WAITING in lib/delivery/thread.ts). */
  readonly flags: Int32Array;
  readonly shipper: HttpShipper;
  /** The open, retried until it succeeds, is given up (close), or meets a file that is not a queue. */
  runtime: Promise<Runtime | undefined>;
  closeRequested: boolean;
  wakeOpen?: () => void;
  closed: boolean;
  /** `ended` requests waiting for the commit of their batch to end. */
  endWaiters: Array<{ seq: number; resolve: () => void }>;
  /** Batches waiting for `commitDelay` (see `hold`), their rows, and the timer that ends the wait. */
  waiting: Array<{ seq: number; batch: RecordBatch; tell: boolean }>;
  waitingRows: number;
  waitTimer?: NodeJS.Timeout;
  /** When the last commit was started (ms). */
  lastCommitAt: number;
  /** The transport's pooled chunks, by pool index (told once each with `chunk`). */
  readonly chunks: Buffer[];
  /** The seq of the next batch to commit (modulo 2^32), and batches that came before their turn. */
  nextSeq: number;
  readonly early: Map<number, { batch: RecordBatch; now: boolean; tell: boolean }>;
}

const { control, ring } = workerData as { control: Int32Array; ring: Int32Array };
guardStatements(control);

const port = parentPort!;
const transports = new Map<number, Transport>();

const post = (message: FromWorker) => port.postMessage(message);

function wire(cause: unknown): WireCause | undefined {
  if (cause === undefined) return undefined;
  if (cause instanceof Error) return { name: cause.name, message: cause.message, code: (cause as { code?: unknown }).code as string | undefined };
  return { name: 'Error', message: String(cause) };
}

function backoff(t: Transport, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    t.wakeOpen = done;
    function done() {
      clearTimeout(timer);
      t.wakeOpen = undefined;
      resolve();
    }
  });
}

/**
 * Opens the queue file. A failure that can pass (the file busy past the busy timeout, full,
 * failing, unreadable) is retried with backoff and told to the main thread, which holds records in
 * memory meanwhile. Only a file that is not a queue is final.
 */
async function open(tid: number, t: Transport, file: string, ctx: RecordContext): Promise<Runtime | undefined> {
  const c = t.config;
  for (let attempt = 0; ; attempt++) {
    if (t.closeRequested) {
      post({ op: 'not-opened', tid });
      return undefined;
    }
    let queue: SqliteQueue | undefined;
    try {
      queue = await openQueue(file, {
        leaseMs: c.leaseTimeout,
        synchronous: c.synchronous,
        busyTimeout: 10_000,
        maxQueueBytes: c.maxQueueBytes,
        overflow: c.overflow,
        maxAge: c.maxAge,
        maxDeadLetters: c.maxDeadLetters,
        destination: c.destination,
        onWarn: (message, cause) => post({ op: 'warn', tid, warning: { kind: 'queue', message, cause: wire(cause) } }),
        onDrop: (reason, count) => post({ op: 'drop', tid, reason, count }),
        notice: (count, reason) => noticeRecord(count, reason, c.overflow, ctx),
      });
      // What processes wrote out at their exit, before anything this transport logs: the main
      // thread's first commit waits for `opened`.
      for (const spill of claimSpills(file)) {
        if (spill.rows.length > 0) await queue.restore(spill.rows, spill.destination);
        spill.done();
        post({ op: 'restored', tid, rows: spill.rows.length, maybeCommitted: spill.maybeCommitted, damaged: spill.damaged });
      }
      const scheduler = new Scheduler(
        queue,
        t.shipper,
        // A window's claim rewrites its rows into the WAL: no more of them than the WAL has room for.
        { ...c, claimChars: queue.walBudget, burst: () => inBurst(t.flags) },
        (err: VectorDeliveryError) =>
          post({ op: 'warn', tid, warning: { kind: 'delivery', message: err.message, status: err.status, action: err.action, records: err.records, cause: wire(err.cause) } }),
        () => post({ op: 'recovered', tid }),
      );
      scheduler.start();
      post({ op: 'opened', tid, afterFailures: attempt > 0 });
      return { queue, scheduler };
    } catch (err) {
      await queue?.close().catch(() => undefined);
      const message = `cannot open the queue file ${JSON.stringify(file)}: ${(err as Error).message}`;
      if (err instanceof ForeignFileError) {
        post({ op: 'foreign', tid, message, cause: wire(err) });
        return undefined;
      }
      post({ op: 'open-failed', tid, message, first: attempt === 0, cause: wire(err) });
      await backoff(t, Math.min(OPEN_RETRY_MAX_MS, OPEN_RETRY_BASE_MS * 2 ** Math.min(attempt, 10)));
    }
  }
}

/**
 * What was handed over waits for more while a few records wait, the last commit started less than
 * `commitDelay` ago, and the main thread did not ask for it now (someone awaits the commit, the
 * logger is pushed back, the transport closes, or a chunk filled in a burst); then it all goes in
 * one commit.
 */
function hold(t: Transport, now: boolean): void {
  const delay = t.config.commitDelay;
  const due = t.lastCommitAt + delay - Date.now();
  if (now || delay === 0 || due <= 0 || t.waitingRows >= COMMIT_NOW_ROWS) commitWaiting(t);
  else if (t.waitTimer === undefined) {
    // Batches handed over meanwhile need not wake this thread (see FLAG_HOLDING).
    Atomics.store(t.flags, FLAG_HOLDING, 1);
    t.waitTimer = setTimeout(() => commitWaiting(t), due);
  }
}

/** The batches waiting, in one commit. */
function commitWaiting(t: Transport): void {
  clearTimeout(t.waitTimer);
  t.waitTimer = undefined;
  if (Atomics.load(t.flags, FLAG_HOLDING) === 1) {
    // Cleared, then the ring read: a batch handed over without waking this thread goes in too.
    Atomics.store(t.flags, FLAG_HOLDING, 0);
    readRing();
  }
  const items = t.waiting;
  if (items.length === 0) return;
  t.waiting = [];
  t.waitingRows = 0;
  t.lastCommitAt = Date.now();
  void commit(t, items);
}

/**
 * Commits `items` (batches in seq order) in one append. Its end is told in the shared flags: a
 * failure is counted there and told (`append-failed`, one a batch) before the seq is ended.
 */
async function commit(t: Transport, items: Transport['waiting']): Promise<void> {
  const last = items[items.length - 1]!.seq;
  const batch = RecordBatch.concat(items.map((i) => i.batch));
  let told = 0;
  for (const i of items) if (i.tell) told += i.batch.length;
  try {
    const rt = await t.runtime;
    if (!rt || t.closed) throw new Error('the queue is not open');
    let appended = 0;
    try {
      // Told in the statement's own callback: at an exit, the main thread knows these batches are in.
      await rt.queue.append(batch, () => Atomics.store(t.flags, FLAG_COMMITTED_SEQ, last));
      appended = batch.length;
    } finally {
      // The commit ended: a request held for the burst may go (it need not wait for the answer).
      Atomics.add(t.flags, FLAG_ENDED, batch.length);
      rt.scheduler.notify(appended, batch.length >= BURST_ROWS);
    }
    if (told > 0) post({ op: 'commit', tid: t.tid, rows: told });
  } catch (err) {
    Atomics.add(t.flags, FLAG_FAILED, items.length);
    const cause = wire(err);
    for (const i of items) post({ op: 'append-failed', tid: t.tid, seq: i.seq, cause });
  } finally {
    Atomics.store(t.flags, FLAG_ENDED_SEQ, last);
    t.endWaiters = t.endWaiters.filter((w) => (reached(last, w.seq) ? (w.resolve(), false) : true));
  }
}

/**
 * Batch `seq` of `t` was handed over: it waits for its commit once every batch before it has come
 * (through the ring or as a message, see RING_WRITE in lib/delivery/thread.ts), so the transport's
 * records go in in the order they were logged.
 */
function handedOver(t: Transport, seq: number, batch: RecordBatch, now: boolean, tell: boolean): void {
  if ((seq | 0) !== t.nextSeq) {
    t.early.set(seq | 0, { batch, now, tell });
    return;
  }
  let next = { batch, now, tell };
  for (;;) {
    t.waiting.push({ seq: t.nextSeq, batch: next.batch, tell: next.tell });
    t.waitingRows += next.batch.length;
    t.nextSeq = (t.nextSeq + 1) | 0;
    hold(t, next.now);
    const early = t.early.get(t.nextSeq);
    if (early === undefined) return;
    t.early.delete(t.nextSeq);
    next = early;
  }
}

/** Entries of the ring read (modulo 2^32). */
let ringRead = 0;
/** `readRing` is under way (a batch it hands on may start a commit, which reads the ring). */
let readingRing = false;

/**
 * Takes every batch written to the ring so far. A batch in a chunk whose `chunk` message has not
 * been read yet stays there, and the rest behind it: that message reads the ring again.
 */
function readRing(): void {
  if (readingRing) return; // the read under way goes on to the end of the ring
  readingRing = true;
  try {
    readRingEntries();
  } finally {
    readingRing = false;
  }
}

function readRingEntries(): void {
  while (ringRead !== Atomics.load(ring, RING_WRITE)) {
    const first = RING_HEADER + (ringRead & (RING_SLOTS - 1)) * RING_ENTRY;
    const tid = ring[first]!;
    const seq = ring[first + 1]!;
    const t = transports.get(tid);
    const parts: Array<{ chunk: Buffer; start: number; rows: number }> = [];
    let n = 0;
    let at = first;
    for (;;) {
      at = RING_HEADER + ((ringRead + n) & (RING_SLOTS - 1)) * RING_ENTRY;
      n++;
      const chunk = t?.chunks[ring[at + 3]!];
      if (t && chunk === undefined) return; // its chunk is told in a message still on its way
      if (chunk) parts.push({ chunk, start: ring[at + 4]!, rows: ring[at + 5]! });
      if (ring[at + 2]! & RING_LAST) break;
    }
    const flags = ring[at + 2]!;
    const rows = ring[at + 6]!;
    const bytes = ring[at + 7]!;
    ringRead = (ringRead + n) | 0;
    Atomics.store(ring, RING_READ, ringRead);
    // A batch for a transport this worker does not have (closed already): told, so it is counted.
    if (!t) post({ op: 'append-failed', tid, seq, cause: { name: 'Error', message: 'this transport is not open in the delivery worker' } });
    else handedOver(t, seq, new RecordBatch(parts, rows, bytes), (flags & RING_NOW) !== 0, (flags & RING_TELL) !== 0);
  }
}

/** `Atomics.waitAsync` (ES2024; in every Node this package supports). */
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: false; value: string } | { async: true; value: Promise<string> } }).waitAsync;

/** Reads the ring whenever the main thread writes to it. */
function watchRing(): void {
  for (;;) {
    const seen = Atomics.load(ring, RING_WRITE);
    readRing();
    const wait = waitAsync(ring, RING_WRITE, seen);
    if (wait.async) {
      void wait.value.then(watchRing);
      return;
    }
  }
}
watchRing();

async function handle(m: ToWorker): Promise<unknown> {
  if (m.op === 'open') {
    let config: ResolvedOptions;
    try {
      config = resolveOptions(m.options as unknown as VectorTransportOptions);
    } catch (err) {
      // The main thread checked these options already: only a bug gets here. Said, and final.
      post({ op: 'foreign', tid: m.tid, message: `the delivery worker refused the options: ${(err as Error).message}`, cause: wire(err) });
      return undefined;
    }
    // Notices only: their level is Python's WARNING whatever the logger's levels are.
    const ctx = recordContext(config, config.extraFields, undefined);
    const flags = new Int32Array(m.flags);
    const t: Transport = {
      tid: m.tid,
      flags,
      config,
      shipper: new HttpShipper({ ...config, tls: config.tls }),
      closeRequested: false,
      closed: false,
      endWaiters: [],
      waiting: [],
      waitingRows: 0,
      lastCommitAt: 0,
      runtime: Promise.resolve(undefined),
      chunks: [],
      nextSeq: 1,
      early: new Map(),
    };
    t.runtime = open(m.tid, t, m.file, ctx);
    transports.set(m.tid, t);
    return undefined;
  }
  const t = transports.get(m.tid);
  if (!t) throw new Error('this transport is not open in the delivery worker');
  switch (m.op) {
    case 'stop-opening':
      t.closeRequested = true;
      t.wakeOpen?.();
      return undefined;
    case 'append':
      handedOver(t, m.seq, RecordBatch.fromShared(m.batch), m.now, m.tell);
      return undefined;
    case 'chunk':
      t.chunks[m.index] = Buffer.from(m.buffer);
      readRing(); // a batch in this chunk may wait there
      return undefined;
    case 'ended': {
      if (m.now) commitWaiting(t);
      if (reached(Atomics.load(t.flags, FLAG_ENDED_SEQ), m.seq)) return undefined;
      await new Promise<void>((resolve) => t.endWaiters.push({ seq: m.seq, resolve }));
      return undefined;
    }
    case 'flush': {
      const rt = await t.runtime;
      if (!rt || t.closed) return { delivered: 0, pending: rt ? await rt.queue.pendingCount().catch(() => 0) : 0 };
      const before = rt.scheduler.stats.delivered;
      await rt.scheduler.flush();
      return { delivered: rt.scheduler.stats.delivered - before, pending: await rt.queue.pendingCount() };
    }
    case 'pending': {
      const rt = await t.runtime;
      return rt && !t.closed ? rt.queue.pendingCount() : 0;
    }
    case 'stats': {
      const rt = await t.runtime;
      const queue = rt && !t.closed ? await rt.queue.stats() : undefined;
      return { queue, delivery: rt?.scheduler.stats };
    }
    case 'exec': {
      const rt = await t.runtime;
      if (!rt) throw new Error('the queue is not open');
      await rt.queue.connection.exec(m.sql);
      return undefined;
    }
    case 'close': {
      commitWaiting(t);
      t.closeRequested = true;
      t.wakeOpen?.();
      const rt = await t.runtime;
      try {
        if (rt && !t.closed) {
          await rt.scheduler.close(m.timeout);
          await rt.queue.close();
        }
      } finally {
        t.closed = true;
        t.shipper.close();
        transports.delete(m.tid);
      }
      return undefined;
    }
  }
}

port.on('message', (m: ToWorker) => {
  // What the ring holds was handed over before this message was sent.
  readRing();
  handle(m).then(
    (value) => {
      if ('id' in m && m.id !== undefined) post({ op: 'reply', id: m.id, value });
    },
    (err: unknown) => {
      if ('id' in m && m.id !== undefined) post({ op: 'reply', id: m.id, error: wire(err) ?? { name: 'Error', message: 'failed' } });
      // An append for a transport this worker does not have (closed already): told, so it is counted.
      else if (m.op === 'append') post({ op: 'append-failed', tid: m.tid, seq: m.seq, cause: wire(err) });
    },
  );
});
