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
  | { op: 'open'; tid: number; id?: undefined; file: string; options: Record<string, unknown>; burst: SharedArrayBuffer }
  | { op: 'append'; tid: number; id: number; seq: number; batch: SharedBatch }
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

/** A worker thread on WORKER_FILE; from source, tsx is registered in it first (a loader given by `--import` stays in the main thread). */
function startWorker(control: Int32Array): Worker {
  // A small young generation: the worker's garbage is short-lived (a batch, a request), and a
  // large one only makes the process's memory grow while Vector is down.
  const options = { workerData: { control }, resourceLimits: { maxYoungGenerationSizeMb: YOUNG_MB } };
  if (extname(WORKER_FILE) === '.js') return new Worker(WORKER_FILE, options);
  return new Worker(`require('tsx/cjs'); require(${JSON.stringify(WORKER_FILE)});`, { ...options, eval: true });
}

/** The worker's young generation, in MiB. */
const YOUNG_MB = 4;

/** [stop, SQLite statements in flight] of the process's delivery worker (see lib/queue/sqlite.ts). */
const control = new Int32Array(new SharedArrayBuffer(8));

/**
 * At the process's exit: no statement starts any more in the delivery worker, and this waits (at
 * most `maxMs`) for those in flight, so the thread is never torn down under one (node-sqlite3 would
 * abort the process). Synchronous, for an `'exit'` listener.
 */
export function quiesceForExit(maxMs: number): void {
  Atomics.store(control, 0, 1);
  const until = Date.now() + maxMs;
  for (let busy = Atomics.load(control, 1); busy > 0; busy = Atomics.load(control, 1)) {
    const left = until - Date.now();
    if (left <= 0) return;
    Atomics.wait(control, 1, busy, left);
  }
}

class DeliveryWorker {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  private readonly listeners = new Map<number, WorkerEvents>();
  private holds = 0;
  private ended = false;

  constructor(private readonly onEnd: (w: DeliveryWorker) => void) {
    this.worker = startWorker(control);
    this.worker.on('message', (m: FromWorker) => {
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
    this.worker.on('exit', (code) => lost(new Error(`it exited with code ${code}`)));
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
      void this.worker.terminate();
    }
  }

  send(message: ToWorker, transfer?: ArrayBuffer[]): void {
    if (this.ended) return;
    this.worker.postMessage(message, transfer);
  }

  /** A request with an answer. Rejects when the worker answers with an error, or stops. */
  request<T>(message: { op: ToWorker['op']; tid: number } & Record<string, unknown>, transfer?: ArrayBuffer[]): Promise<T> {
    if (this.ended) return Promise.reject(new Error('the delivery worker stopped'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
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
