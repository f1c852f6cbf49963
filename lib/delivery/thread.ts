/**
 * The main thread's side of the delivery worker (lib/delivery/worker.ts): one worker thread per process,
 * shared by every transport, started with the first and ended when the last one closes. It never
 * keeps the process alive by itself (unref'd), except while a caller awaits an answer from it
 * (`hold`), so `await transport.close()` at the end of a script still gets one.
 */
import { extname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { SharedBatch } from './batch';
import type { DeliveryAction } from '../errors';

/** A commit of this many records or more (waiting, or under way) means the logger is in a burst: the worker's requests wait for it. */
export const BURST_ROWS = 1000;

/** Records waiting for a commit that make it start at once, without waiting `commitDelay` for more. */
export const COMMIT_NOW_ROWS = 256;

/**
 * True when `mark`, a batch seq read from the shared flags, is `seq` or later. An Int32Array keeps
 * seqs modulo 2^32 (after 2^31 commits, about 250 days at a commit every 10 ms, they turn negative),
 * so seqs are compared by their difference, modulo 2^32.
 */
export const reached = (mark: number, seq: number): boolean => ((mark - (seq | 0)) | 0) >= 0;

/**
 * A transport's flags in shared memory, an Int32Array: records waiting for a commit, records
 * handed over to the worker in all (both written by the main thread), the seq of the last batch
 * committed, records whose commit ended (gone in or failed) in all, the seq of the last batch whose
 * commit ended, and the batches whose commit failed, in all (the last four written by the worker).
 * The totals are kept modulo 2^32 and compared by their difference.
 *
 * The main thread learns from these which batches are committed without an answer from the worker
 * (an answer wakes its event loop, which costs the application more than the rest of a commit): a
 * batch is settled once its seq is ended and every failure counted has been told to it (each one
 * with an `append-failed` message, posted before the seq after it ends).
 */
export const FLAG_WAITING = 0;
export const FLAG_HANDED = 1;
export const FLAG_COMMITTED_SEQ = 2;
export const FLAG_ENDED = 3;
export const FLAG_ENDED_SEQ = 4;
export const FLAG_FAILED = 5;
/**
 * 1 while the worker holds this transport's batches for `commitDelay` (its timer reads the ring when
 * it fires): a batch handed over through the ring then does not wake the worker, unless it asks for
 * its commit now. The worker clears it before it reads the ring, and the main thread reads it after
 * it moved RING_WRITE (both sequentially consistent): if the main thread saw it set, the worker's
 * next read of the ring sees the batch.
 */
export const FLAG_HOLDING = 6;
export const FLAG_COUNT = 7;

/**
 * Whether the logger is in a burst: a commit of BURST_ROWS records or more waits, or is under way.
 * A commit stops counting when the worker ends it, not when the main thread reads its answer: the
 * scheduler looks right after the commit, before the answer has even gone.
 */
export const inBurst = (flags: Int32Array): boolean =>
  Atomics.load(flags, FLAG_WAITING) >= BURST_ROWS || ((Atomics.load(flags, FLAG_HANDED) - Atomics.load(flags, FLAG_ENDED)) | 0) >= BURST_ROWS;

/**
 * The hand-over ring: batches the main thread hands to the worker without a message. A batch whose
 * rows are all in its transport's pooled chunks (lib/delivery/batch.ts: kept for the transport's
 * life, each told to the worker once with a `chunk` message) is written here as one entry per
 * chunk part, and the worker is woken with `Atomics.notify`; it waits with `Atomics.waitAsync`.
 * A message to a thread costs both threads more (the structured clone of each chunk's
 * SharedArrayBuffer, the message objects); a service that logs every turn of its event loop hands
 * over a batch every turn. Any other batch (a record of its own chunk, a ring with no room) goes
 * as an `append` message: the worker commits each transport's batches in their seq order,
 * whichever way they came, and reads the ring before every message, so a message never overtakes
 * a batch handed over before it.
 *
 * Layout (Int32Array): [WRITE, READ], then RING_SLOTS entries of RING_ENTRY ints: tid, seq, flags
 * (RING_NOW, RING_TELL, RING_LAST: the batch's last part), the chunk's pool index, the part's start
 * and rows, and in the last part the batch's rows and bytes. WRITE (entries written, main thread)
 * and READ (entries read, worker) count modulo 2^32.
 */
export const RING_WRITE = 0;
export const RING_READ = 1;
export const RING_HEADER = 2;
export const RING_SLOTS = 2048;
export const RING_ENTRY = 8;
export const RING_NOW = 1;
export const RING_TELL = 2;
export const RING_LAST = 4;
/** Parts a batch may have to go through the ring (more go as a message). */
const RING_MAX_PARTS = 64;

/** A cause, as it crosses to the main thread (an Error does not keep its class across). */
export interface WireCause {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
}

export type WireWarning =
  | { readonly kind: 'queue'; readonly message: string; readonly cause?: WireCause }
  | { readonly kind: 'delivery'; readonly message: string; readonly status: number | undefined; readonly action: DeliveryAction; readonly records: number; readonly cause?: WireCause };

export type ToWorker =
  | { op: 'open'; tid: number; id?: undefined; file: string; options: Record<string, unknown>; flags: SharedArrayBuffer }
  | { op: 'append'; tid: number; id?: undefined; seq: number; batch: SharedBatch; now: boolean; tell: boolean }
  | { op: 'chunk'; tid: number; id?: undefined; index: number; buffer: SharedArrayBuffer }
  | { op: 'ended'; tid: number; id: number; seq: number; now: boolean }
  | { op: 'flush' | 'pending' | 'stats'; tid: number; id: number }
  | { op: 'stop-opening'; tid: number; id?: undefined }
  | { op: 'close'; tid: number; id: number; timeout: number }
  | { op: 'exec'; tid: number; id: number; sql: string };

export type FromWorker =
  | { op: 'reply'; id: number; value?: unknown; error?: WireCause }
  | { op: 'opened'; tid: number; afterFailures: boolean }
  | { op: 'not-opened'; tid: number }
  | { op: 'lost'; tid: number; message: string }
  | { op: 'open-failed'; tid: number; message: string; first: boolean; cause?: WireCause }
  | { op: 'foreign'; tid: number; message: string; cause?: WireCause }
  | { op: 'warn'; tid: number; warning: WireWarning }
  | { op: 'drop'; tid: number; reason: string; count: number }
  | { op: 'append-failed'; tid: number; seq: number; cause?: WireCause }
  | { op: 'commit'; tid: number; rows: number }
  | { op: 'recovered'; tid: number }
  | { op: 'restored'; tid: number; rows: number; maybeCommitted: number; damaged: number };

type Unasked = Exclude<FromWorker, { op: 'reply' }>;

/** What a transport hears from the worker without asking. */
export type WorkerEvents = (message: Unasked) => void;

/** An Error made from a cause that crossed threads. */
export function fromWire(cause: WireCause | undefined): Error | undefined {
  if (cause === undefined) return undefined;
  const err = new Error(cause.message);
  err.name = cause.name;
  if (cause.code !== undefined) (err as Error & { code?: string }).code = cause.code;
  return err;
}

/** The worker's file beside this one: `.ts` when the package runs from source (tests, under tsx), `.js` built. */
const WORKER_FILE = join(__dirname, `worker${extname(__filename)}`);

/**
 * The shared flags of one delivery worker: [stop, work under way, start]. `stop` is set when the
 * thread is about to end: no SQLite work starts any more (lib/queue/sqlite.ts). `work under way`
 * counts SQLite work in flight, and the worker's start while it loads its modules. `start` is one of
 * START_*: the thread must not be torn down while it loads them either (Node aborts on a
 * `require()` of an ES module cut short, node-sqlite3 on its addon's loading).
 */
const STOP = 0;
const BUSY = 1;
const START = 2;
const START_NOT_YET = 0;
const START_LOADING = 1;
const START_NEVER = 2;

/**
 * The worker's bootstrap: it loads its modules only if the exit has not come first (then it does
 * nothing, and the exit need not wait), and stops counting its start a turn of the event loop
 * after they loaded.
 */
function bootstrap(file: string): string {
  const tsx = extname(file) === '.js' ? '' : "require('tsx/cjs');";
  return `const c = require('node:worker_threads').workerData.control;
if (Atomics.compareExchange(c, ${START}, ${START_NOT_YET}, ${START_LOADING}) === ${START_NOT_YET}) {
  try {
    ${tsx} require(${JSON.stringify(file)});
  } finally {
    setImmediate(() => { Atomics.sub(c, ${BUSY}, 1); Atomics.notify(c, ${BUSY}); });
  }
}`;
}

/** A worker thread on WORKER_FILE (from source, tsx is registered in it first: a loader given by `--import` stays in the main thread). */
function startWorker(control: Int32Array, ring: Int32Array): Worker {
  // A small young generation: the worker's garbage is short-lived (a batch, a request), and a
  // large one only makes the process's memory grow while Vector is down.
  const options = { workerData: { control, ring }, resourceLimits: { maxYoungGenerationSizeMb: YOUNG_MB }, eval: true };
  return new Worker(bootstrap(WORKER_FILE), options);
}

/** The worker's young generation, in MiB. */
const YOUNG_MB = 4;

/** The flags of the delivery workers whose thread has not exited. */
const running = new Set<Int32Array>();

/** Sets `stop`; true when nothing is under way. A worker that had not begun loading its modules never will. */
function stopWork(control: Int32Array): boolean {
  Atomics.store(control, STOP, 1);
  if (Atomics.compareExchange(control, START, START_NOT_YET, START_NEVER) === START_NOT_YET) Atomics.sub(control, BUSY, 1);
  return Atomics.load(control, BUSY) <= 0;
}

/**
 * At the process's exit: no SQLite work starts any more in the delivery worker, and this waits (at
 * most `maxMs`) for the work in flight and for a start under way, so the thread is never torn down
 * under them. Synchronous, for an `'exit'` listener.
 */
export function quiesceForExit(maxMs: number): void {
  const until = Date.now() + maxMs;
  for (const control of running) {
    stopWork(control);
    for (let busy = Atomics.load(control, BUSY); busy > 0; busy = Atomics.load(control, BUSY)) {
      const left = until - Date.now();
      if (left <= 0) return;
      Atomics.wait(control, BUSY, busy, left);
    }
  }
}

/**
 * The same, without blocking (it looks every few ms, and keeps no process alive: one that ends
 * meanwhile waits in its `'exit'` listener): before a worker no transport uses any more is terminated.
 */
async function quiesced(control: Int32Array, maxMs: number): Promise<void> {
  const until = Date.now() + maxMs;
  for (let idle = stopWork(control); !idle && Date.now() < until; idle = Atomics.load(control, BUSY) <= 0) {
    await new Promise((resolve) => setTimeout(resolve, 5).unref());
  }
}

/** The longest a worker no transport uses any more is given to finish its SQLite work, in ms. */
const END_QUIESCE_MS = 5000;

class DeliveryWorker {
  private readonly worker: Worker;
  private nextId = 1;
  /** Requests waiting for their reply, with the transport that asked. */
  private readonly pending = new Map<number, { tid: number; resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  private readonly listeners = new Map<number, WorkerEvents>();
  private holds = 0;
  private ended = false;
  /** @internal Messages heard from the worker, by transport id (a test seam: each one woke the main thread's event loop). */
  readonly heard = new Map<number, number>();
  /** See STOP, BUSY, START; the start counts as work under way until the worker's modules loaded. */
  private readonly control = new Int32Array(new SharedArrayBuffer(12));
  /** See RING_WRITE. */
  private readonly ring = new Int32Array(new SharedArrayBuffer((RING_HEADER + RING_SLOTS * RING_ENTRY) * 4));
  /** @internal Batches handed over through the ring and as messages, and those of the ring that did not wake the worker (a test seam). */
  readonly handed = { ring: 0, message: 0, unwoken: 0 };

  constructor(private readonly onEnd: (w: DeliveryWorker) => void) {
    Atomics.store(this.control, BUSY, 1);
    running.add(this.control);
    this.worker = startWorker(this.control, this.ring);
    this.worker.on('message', (m: FromWorker) => {
      const tid = m.op === 'reply' ? this.pending.get(m.id)?.tid : m.tid;
      if (tid !== undefined) this.heard.set(tid, (this.heard.get(tid) ?? 0) + 1);
      if (m.op === 'reply') {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.error) p.reject(fromWire(m.error)!);
        else p.resolve(m.value);
        return;
      }
      this.listeners.get(m.tid)?.(m);
    });
    const lost = (err: Error) => {
      if (this.ended) return;
      this.ended = true;
      this.onEnd(this);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      for (const [tid, listener] of this.listeners) listener({ op: 'lost', tid, message: `the delivery worker stopped: ${err.message}` });
    };
    this.worker.on('error', lost);
    this.worker.on('exit', (code) => {
      running.delete(this.control);
      lost(new Error(`it exited with code ${code}`));
    });
    // After the listeners: adding a 'message' listener refs the worker's port again.
    this.worker.unref();
  }

  register(tid: number, listener: WorkerEvents): void {
    this.listeners.set(tid, listener);
  }

  /** A transport closed: the worker ends with the last one. */
  unregister(tid: number): void {
    this.listeners.delete(tid);
    if (this.listeners.size === 0 && !this.ended) {
      this.ended = true;
      this.onEnd(this);
      void quiesced(this.control, END_QUIESCE_MS).then(() => this.worker.terminate());
    }
  }

  send(message: ToWorker, transfer?: ArrayBuffer[]): void {
    if (this.ended) return;
    if (message.op === 'append') this.handed.message++;
    this.worker.postMessage(message, transfer);
  }

  /**
   * Hands batch `seq` of transport `tid` over through the ring (see RING_WRITE): `parts` holds
   * (pool index, start, rows) for each of its chunk parts, each chunk already told to the worker.
   * False when the ring has no room for it (or it has too many parts): then it goes as a message.
   */
  handOver(tid: number, flags: Int32Array, seq: number, parts: readonly number[], rows: number, bytes: number, now: boolean, tell: boolean): boolean {
    if (this.ended) return true;
    const n = parts.length / 3;
    const ring = this.ring;
    const write = Atomics.load(ring, RING_WRITE);
    if (n > RING_MAX_PARTS || ((write - Atomics.load(ring, RING_READ)) | 0) + n > RING_SLOTS) return false;
    const marks = (now ? RING_NOW : 0) | (tell ? RING_TELL : 0);
    for (let i = 0; i < n; i++) {
      const at = RING_HEADER + ((write + i) & (RING_SLOTS - 1)) * RING_ENTRY;
      ring[at] = tid;
      ring[at + 1] = seq;
      ring[at + 2] = marks | (i === n - 1 ? RING_LAST : 0);
      ring[at + 3] = parts[3 * i]!;
      ring[at + 4] = parts[3 * i + 1]!;
      ring[at + 5] = parts[3 * i + 2]!;
      ring[at + 6] = rows;
      ring[at + 7] = bytes;
    }
    // The entries are written before WRITE moves (a sequentially consistent store): the worker reads them after it sees WRITE.
    Atomics.store(ring, RING_WRITE, (write + n) | 0);
    // A worker that holds this transport's batches for commitDelay reads the ring when its timer fires.
    if (now || Atomics.load(flags, FLAG_HOLDING) !== 1) Atomics.notify(ring, RING_WRITE);
    else this.handed.unwoken++;
    this.handed.ring++;
    return true;
  }

  /** A request with an answer. Rejects when the worker answers with an error, or stops. */
  request<T>(message: { op: ToWorker['op']; tid: number } & Record<string, unknown>, transfer?: ArrayBuffer[]): Promise<T> {
    if (this.ended) return Promise.reject(new Error('the delivery worker stopped'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { tid: message.tid, resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...message, id }, transfer);
    });
  }

  /** Keeps the process alive while `fn` runs (a caller awaits it). */
  async hold<T>(fn: () => Promise<T>): Promise<T> {
    if (this.holds++ === 0) this.worker.ref();
    try {
      return await fn();
    } finally {
      if (--this.holds === 0) this.worker.unref();
    }
  }
}

let shared: DeliveryWorker | undefined;
let nextTid = 1;

/** The process's delivery worker (started now if none runs), and a new transport id on it. */
export function deliveryWorker(): { worker: DeliveryWorker; tid: number } {
  shared ??= new DeliveryWorker((w) => {
    if (shared === w) shared = undefined;
  });
  return { worker: shared, tid: nextTid++ };
}

export type { DeliveryWorker };
