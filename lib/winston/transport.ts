import TransportStream from 'winston-transport';
import { BatchWriter, RecordBatch } from '../delivery/batch';
import { COMMIT_NOW_ROWS, FLAG_COMMITTED_SEQ, FLAG_COUNT, FLAG_ENDED_SEQ, FLAG_FAILED, FLAG_HANDED, FLAG_WAITING, inBurst, type DeliveryWorker, deliveryWorker, type FromWorker, fromWire, quiesceForExit, reached } from '../delivery/thread';
import { VectorDeliveryError, VectorQueueError } from '../errors';
import { type ResolvedOptions, type VectorTransportOptions, resolveOptions } from './options';
import { prepareDatabaseFile } from '../queue/queue-file';
import { buildRecord, noticeRecord, recordContext, type RecordContext } from './record';
import type { DeliveryStats } from '../delivery/scheduler';
import { toJson } from './serialize';
import { writeSpill } from '../queue/spill';

/** Transports whose records must be spilled if the process exits (see lib/queue/spill.ts). */
const live = new Set<VectorTransport>();
let exitHooked = false;

/** What the exit spill reads of winston's logger: its stream buffers and its format. */
interface LoggerStreams {
  readonly _readableState?: unknown;
  readonly _writableState?: unknown;
  readonly _transformState?: unknown;
  readonly format?: { transform(info: unknown, options?: unknown): unknown; options?: unknown };
}

/** The chunks a writable stream (readable-stream 3 or Node's own) holds, oldest first. */
function buffered(state: unknown): unknown[] {
  try {
    const s = state as { getBuffer?: () => Array<{ chunk: unknown }>; buffered?: Array<{ chunk: unknown }> };
    const list = typeof s?.getBuffer === 'function' ? s.getBuffer() : (s?.buffered ?? []);
    return list.map((w) => w.chunk);
  } catch {
    return [];
  }
}

/** The objects a readable stream holds unread (readable-stream 3's linked list, or an array). */
function readableBuffer(state: unknown): unknown[] {
  try {
    const b = (state as { buffer?: unknown })?.buffer;
    if (Array.isArray(b)) return [...b];
    const out: unknown[] = [];
    for (let node = (b as { head?: { data: unknown; next: unknown } | null })?.head; node; node = node.next as typeof node) out.push(node.data);
    return out;
  } catch {
    return [];
  }
}

/** One `'exit'` listener for every transport of the process: it never throws. */
function onExit(): void {
  // First the worker thread is made safe to tear down (no SQLite statement under way); then each
  // transport knows whether its commit under way went in, and writes out only what did not.
  quiesceForExit(EXIT_QUIESCE_MS);
  for (const t of live) {
    try {
      t.spillNow();
    } catch {
      // nothing more can be done while the process exits
    }
  }
}

/** The longest the exit waits for SQLite statements in flight in the delivery worker, in ms. */
const EXIT_QUIESCE_MS = 1000;

/** How long the transport ships when winston's exception handler ends it to exit (it waits 3 s). */
const EXIT_SHIP_MS = 2000;

/**
 * Batches with the delivery worker whose end this thread has not settled, at most (see
 * `commitLoop`): about one a turn of the event loop that logged, for `commitDelay` ms (each holds a
 * chunk). Beyond it, or beyond MAX_UNCOMMITTED_HWMS × `highWaterMark` records handed over and not
 * yet committed, the oldest is waited for, and what waits in the worker is committed at once.
 */
const MAX_FLIGHTS = 16;
const MAX_UNCOMMITTED_HWMS = 2;

/** Chunks go to the worker during a synchronous burst while fewer than this many `highWaterMark`s of records handed over are not yet committed (see `handOverFilled`). */
const EARLY_HANDOVER = 4;


/** What `flush()` answers. */
export interface FlushResult {
  /** Records delivered while the flush ran. */
  readonly delivered: number;
  /** Records still in the queue afterwards. */
  readonly pending: number;
}

/** What `stats()` answers. */
export interface TransportStats {
  readonly pending: number;
  readonly delivered: number;
  readonly retried: number;
  /** Requests that got no answer (timeout, connection closed first): their records were sent again and may arrive twice. */
  readonly unanswered: number;
  readonly deadLettered: number;
  /**
   * Records written out at a process exit before their commit (by this or another process on the
   * same file) and committed when this transport opened the file.
   */
  readonly restored: number;
  /** Rows in the dead-letter table now (also those of earlier runs). */
  readonly deadLetters: number;
  /**
   * Records dropped, by reason: `queue-full`, `disk-full`, `max-age` (the bounds), `write-failed`
   * (the file failed), `queue-unavailable` (beyond `highWaterMark` while the file could not be
   * opened), `format-error`, `unserializable`, `spill-damaged` (a line of an exit spill cut short),
   * `dead-letter-overflow` (old dead letters).
   */
  readonly dropped: Readonly<Record<string, number>>;
  /** Age of the oldest pending record, in ms; null when none is pending. */
  readonly oldestPendingAgeMs: number | null;
  /** Bytes the queue takes on disk now (pages in use, the WAL and the shm file), against `maxQueueBytes`. */
  readonly queueBytes: number;
  readonly lastError: { readonly message: string; readonly status: number | undefined; readonly at: Date } | null;
  readonly lastSuccessAt: Date | null;
}

/** What the delivery worker answers to `stats`. */
interface WorkerStats {
  readonly queue: { pending: number; oldestPendingAt: number | null; deadLetters: number; queueBytes: number } | undefined;
  readonly delivery: DeliveryStats | undefined;
}

/** Options that stay on the main thread (winston's own, and extraFields, sent already made safe). */
const LOCAL_ONLY = new Set(['format', 'level', 'silent', 'handleExceptions', 'handleRejections', 'extraFields']);

type WriteChunk = { chunk: Record<string, unknown> };

/** A batch handed to the delivery worker, until this thread knows its commit ended (see `settleEnded`). */
interface Flight {
  batch: RecordBatch;
  readonly rows: number;
  readonly seq: number;
  /** Its infos, for 'logged' listeners (after the commit). */
  readonly infos: Record<string, unknown>[];
  /** The worker said in shared memory that it is committed; its chunks went back to the writer already. */
  released: boolean;
  /** This thread knows its commit ended: it left `flights`. */
  settled: boolean;
  /** An `ended` request is out for it (someone waits): `'now'` if it also started the commit at once. */
  asked: false | 'wait' | 'now';
  /** Resolves once settled; never rejects. */
  readonly done: Promise<void>;
  readonly resolve: () => void;
}

/**
 * A winston transport that commits every record to a local SQLite queue before acknowledging it,
 * and ships the queue in batches to Vector's `http_server` source.
 */
export class VectorTransport extends TransportStream {
  /** The options in force, after defaults and validation. Private: it holds the Authorization header. */
  private readonly config: ResolvedOptions;
  /** True once the delivery worker has the queue file open; false if it never will (closed first, foreign). */
  private readonly runtime: Promise<boolean>;
  private settleRuntime: (opened: boolean) => void = () => undefined;
  private readonly worker: DeliveryWorker;
  private readonly tid: number;
  /** Shared with the delivery worker: see FLAG_WAITING in lib/delivery/thread.ts. */
  private readonly flags = new Int32Array(new SharedArrayBuffer(FLAG_COUNT * 4));
  /** Seq of the last batch handed to the worker (batches are committed in seq order). */
  private appendSeq = 0;
  /** Batches with the worker, in seq order, until this thread knows their commit ended. */
  private flights: Flight[] = [];
  /** `append-failed` messages heard (see FLAG_FAILED), modulo 2^32. */
  private failuresHeard = 0;
  private readonly extraFields: Readonly<Record<string, unknown>>;
  private recordContext: { source: unknown; ctx: RecordContext } | undefined;
  /**
   * Records built and waiting for the next commit, as UTF-8 in reused chunks (lib/delivery/batch.ts), and
   * their infos, for 'logged' listeners.
   */
  private readonly uncommitted = new BatchWriter();
  private uncommittedInfos: Record<string, unknown>[] = [];
  /** winston's callbacks held back while `highWaterMark` records wait, or until the turn ends (see `admit`). */
  private held: Array<() => void> = [];
  /** Set while the transport paces winston (see `admit`): the end of this turn of the event loop. */
  private turnEnd: NodeJS.Immediate | undefined;
  /** Records accepted since pacing counted from zero (at the start of its turn, see `pace`). */
  private turnAccepted = 0;
  /** The commit loop, while it runs. */
  private committing: Promise<void> | undefined;
  /** Callers of `committed()` (and of what waits for it) still waiting: no commit waits for more records meanwhile. */
  private committedWaiters = 0;
  /** Hands over the records waiting for the end of this turn now, to be committed at once (set while some wait). */
  private commitNow: (() => void) | undefined;
  private readonly dropped: Record<string, number> = {};
  private readonly dropWarnings = new Map<string, { at: number; count: number }>();
  private closing: Promise<void> | undefined;
  private queueClosed = false;
  /** The queue file's path, resolved. */
  private readonly file: string;
  private restored = 0;
  /** The worker has the file open. */
  private opened = false;
  /** The delivery worker stopped (a bug): nothing more can be committed by this transport. */
  private workerLost = false;
  /** The file is another application's: nothing is ever written beside it. */
  private foreign = false;
  /** The last attempt to open the file failed: records are not held back, and beyond a bound dropped. */
  private openFailed = false;
  /** Waiters of `committed()`, told when an attempt to open the file fails. */
  private onOpenFailed: Array<() => void> = [];
  /** `queue-unavailable` drops already told downstream by a notice record. */
  private noticedUnavailable = 0;

  constructor(options: VectorTransportOptions) {
    const config = resolveOptions(options);
    // Only winston's own settings reach the stream: its buffer stays at the default depth, since
    // records wait for a commit in `uncommitted` (built, far smaller than winston's info objects).
    super({
      format: options.format,
      level: options.level,
      silent: options.silent,
      handleExceptions: options.handleExceptions,
      handleRejections: options.handleRejections,
    });
    this.config = config;
    this.extraFields = toJson(config.extraFields) as Record<string, unknown>;
    // What the delivery worker gets (it resolves the options again): plain data only.
    const crossing: Record<string, unknown> = { extraFields: this.extraFields };
    for (const [key, value] of Object.entries(options)) {
      if (LOCAL_ONLY.has(key) || value === undefined) continue;
      try {
        structuredClone(value);
      } catch (err) {
        throw new TypeError(`\`${key}\` must be plain data (strings, numbers, Buffers) to reach the delivery worker: ${(err as Error).message}`);
      }
      crossing[key] = value;
    }
    const { file, warnings } = prepareDatabaseFile(this.config.dbPath);
    this.file = file;
    // After construction, so a listener attached right after `new` sees them.
    if (warnings.length > 0) setImmediate(() => warnings.forEach((w) => this.warn(new VectorQueueError(w))));
    live.add(this);
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', onExit);
    }
    this.runtime = new Promise<boolean>((resolve) => (this.settleRuntime = resolve));
    const { worker, tid } = deliveryWorker();
    this.worker = worker;
    this.tid = tid;
    worker.register(tid, (m) => this.fromWorker(m));
    worker.send({ op: 'open', tid, file, options: crossing, flags: this.flags.buffer as SharedArrayBuffer });
    // After winston-transport's own 'pipe' listener, which takes the logger's levels.
    this.once('pipe', (source: { levels?: Record<string, number> }) => {
      const level = this.level;
      if (level === undefined || source?.levels === undefined || Object.hasOwn(source.levels, level)) return;
      this.warn(
        new VectorQueueError(
          `level ${JSON.stringify(level)} is not a level of this logger (${Object.keys(source.levels).join(', ')}): winston drops every record before it reaches this transport`,
        ),
      );
    });
    // winston's exception and rejection handlers mark a transport `_ending` and wait up to 3 s
    // for its 'finish' before they exit the process: ship what can be shipped, then say so.
    let ending = false;
    Object.defineProperty(this, '_ending', {
      configurable: true,
      get: () => ending,
      set: (value: unknown) => {
        if (value && !ending) void this.endForExit();
        ending = Boolean(value);
      },
    });
  }

  /**
   * The crash record (logged right after winston marks the transport) is committed, what is queued
   * ships for at most `EXIT_SHIP_MS` (or `closeTimeout` if shorter), the file is closed, and
   * 'finish' tells winston it may exit: well inside its 3 s.
   */
  private async endForExit(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    this.closing ??= this.holdingProcess(() => this.shutdown(Math.min(this.config.closeTimeout, EXIT_SHIP_MS)));
    await this.closing;
    this.emit('finish');
  }

  /** What the delivery worker says without being asked: the file's state, warnings, drops. */
  private fromWorker(m: Exclude<FromWorker, { op: 'reply' }>): void {
    switch (m.op) {
      case 'opened':
        this.openFailed = false;
        this.opened = true;
        this.onOpenFailed = [];
        if (m.afterFailures) this.warn(new VectorQueueError(`the queue file ${JSON.stringify(this.file)} is open now`));
        this.settleRuntime(true);
        return;
      case 'not-opened':
        this.settleRuntime(false);
        return;
      case 'lost':
        // A bug, not a state: what waits is written out beside the file from now on (see commitLoop).
        this.workerLost = true;
        this.settleLost();
        this.warn(new VectorQueueError(`${m.message}; records are written out beside the queue file, for the next start`));
        this.settleRuntime(false);
        return;
      case 'open-failed':
        this.openFailed = true;
        for (const resolve of this.onOpenFailed.splice(0)) resolve();
        // winston's stream is not held back while the file cannot be opened (see accept()).
        for (const callback of this.held.splice(0)) callback();
        if (m.first) this.warn(new VectorQueueError(`${m.message}; retrying with backoff, records wait in memory (up to highWaterMark)`, { cause: fromWire(m.cause) }));
        return;
      case 'foreign': {
        this.foreign = true;
        const error = new VectorQueueError(m.message, { cause: fromWire(m.cause) });
        setImmediate(() => this.emit('error', error));
        this.settleRuntime(false);
        return;
      }
      case 'warn': {
        const w = m.warning;
        const cause = fromWire(w.cause);
        this.warn(
          w.kind === 'delivery'
            ? new VectorDeliveryError(w.message, { status: w.status, action: w.action, records: w.records, cause })
            : new VectorQueueError(w.message, cause === undefined ? undefined : { cause }),
        );
        return;
      }
      case 'drop':
        this.drop(m.reason, m.count);
        return;
      case 'commit':
        try {
          this.emit('commit', m.rows);
        } catch {
          // a listener threw: nothing of the transport's depends on it
        }
        return;
      case 'append-failed': {
        this.failuresHeard = (this.failuresHeard + 1) | 0;
        // The batches before it ended before it did, and their failures were told before this one.
        const at = this.flights.findIndex((f) => f.seq === m.seq);
        for (const f of this.flights.slice(0, at + 1)) this.settle(f, f.seq === m.seq ? (fromWire(m.cause) ?? new Error('the commit failed')) : undefined);
        this.settleEnded();
        return;
      }
      case 'recovered':
        this.recovered();
        return;
      case 'restored': {
        this.restored += m.rows;
        if (m.damaged > 0) this.drop('spill-damaged', m.damaged);
        const twice = m.maybeCommitted > 0 ? ` (${m.maybeCommitted} were in a commit under way at the exit and may ship twice)` : '';
        this.warn(new VectorQueueError(`${m.rows} record(s) written out at a process exit were committed${twice}`));
        return;
      }
    }
  }

  /**
   * @internal Writes every record accepted and not yet committed to a spill file, synchronously.
   * Called from the process's `'exit'` listener; also what a test calls to see it work.
   */
  spillNow(): number {
    if (this.queueClosed || this.foreign) return 0;
    // Records still in the streams before this transport (pushed back past `highWaterMark`):
    // this transport's buffer, the logger's formatted output, then the logger's unformatted input.
    const self = this as unknown as { parent?: LoggerStreams; _writableState?: unknown };
    for (const info of buffered(self._writableState)) this.acceptBuffered(info, false);
    const parent = self.parent;
    if (parent) {
      for (const info of readableBuffer(parent._readableState)) this.acceptBuffered(info, false);
      // The chunk the logger's Transform holds while its output is full, not yet formatted.
      const ts = parent._transformState as { writechunk?: unknown; writecb?: unknown } | undefined;
      if (ts?.writecb && ts.writechunk) this.acceptBuffered(ts.writechunk, true);
      for (const info of buffered(parent._writableState)) this.acceptBuffered(info, true);
    }
    // The commits under way, but those the worker said went in (it writes the seq in the commit's own callback).
    const committed = Atomics.load(this.flags, FLAG_COMMITTED_SEQ);
    const open = this.flights.filter((f) => !reached(committed, f.seq)).map((f) => f.batch);
    return writeSpill(this.file, this.config.destination, open.length === 0 ? undefined : RecordBatch.concat(open), this.uncommitted.peek());
  }

  /** An info found in a stream buffer at exit: through the formats and the level filter, then accepted. */
  private acceptBuffered(raw: unknown, loggerFormat: boolean): void {
    let info = raw;
    const parent = (this as unknown as { parent?: LoggerStreams }).parent;
    if (loggerFormat && parent?.format && info) {
      try {
        info = parent.format.transform(info, parent.format.options);
      } catch (err) {
        this.drop('format-error', 1, err);
        return;
      }
    }
    const ready = info ? this.filtered(info, true) : false;
    if (ready) this.accept(ready);
  }

  /**
   * The info through winston-transport's level filter (when `checkLevel`) and this transport's
   * `format`; false when filtered out, or when the format (or reading the info) threw: that record
   * is dropped, counted as `format-error`, instead of throwing into the caller's log call.
   */
  private filtered(info: unknown, checkLevel: boolean): Record<string, unknown> | false {
    try {
      if (checkLevel && !(this as unknown as { _accept(w: { chunk: unknown }): boolean })._accept({ chunk: info })) return false;
      if (!this.format) return info as Record<string, unknown>;
      return (this.format.transform({ ...(info as object) } as never, this.format.options) as Record<string, unknown> | false) || false;
    } catch (err) {
      this.drop('format-error', 1, err);
      return false;
    }
  }

  /** The record context, made again only when winston hands the transport another level set. */
  private context(): RecordContext {
    const levels = (this as unknown as { levels?: Record<string, number> }).levels;
    let cached = this.recordContext;
    if (cached === undefined || cached.source !== levels) {
      cached = { source: levels, ctx: recordContext(this.config, this.extraFields, levels) };
      this.recordContext = cached;
    }
    return cached.ctx;
  }

  /**
   * winston calls this for one record. The record is built at once (so winston's info object is
   * not kept) and joins the next commit; the callback fires at once while fewer than
   * `highWaterMark` records wait for a commit, and otherwise when the commit under way takes them,
   * so a logger that outruns the disk is pushed back instead of buffering without bound.
   */
  override log(info: Record<string, unknown>, callback: () => void): void {
    this.accept(info);
    this.admit(callback);
  }

  /** winston-transport's `_write`, through `filtered`: a `format` that throws never reaches the caller. */
  override _write(info: Record<string | symbol, unknown>, _enc: unknown, callback: (error?: Error | null) => void): void {
    const ready = this.filtered(info, true);
    if (ready) this.log(ready, callback as () => void);
    else callback(null);
  }

  /** winston calls this with records its stream buffered while the transport pushed back. */
  override logv(chunks: WriteChunk[], callback: () => void): void {
    for (const { chunk } of chunks) {
      // winston-transport's _writev has already filtered by level.
      const info = this.filtered(chunk, false);
      if (info) this.accept(info);
    }
    this.admit(callback);
  }

  private accept(info: Record<string, unknown>): void {
    if (this.openFailed && this.uncommitted.length >= this.config.highWaterMark) {
      // The file is not open yet (or cannot be now): memory is bounded; the gap is counted and told.
      this.drop('queue-unavailable', 1);
      return;
    }
    this.turnAccepted++;
    try {
      this.uncommitted.write(buildRecord(info, this.context()));
      this.flags[FLAG_WAITING] = this.uncommitted.length;
      // The info is kept until the commit only for those who listen to 'logged'.
      if (this.listenerCount('logged') > 0) this.uncommittedInfos.push(info);
    } catch (err) {
      // buildRecord guards every access; this is the last net so one record never takes others down.
      this.drop('unserializable', 1, err);
    }
    if (this.uncommitted.filledRows > 0) this.handOverFilled();
    if (this.committing === undefined) this.startCommits();
    else if (this.commitNow !== undefined && !this.fewWaiting()) this.commitNow();
  }

  /**
   * A chunk of records is full: in a synchronous burst (a loop of log calls with no yield), it goes
   * to the worker now, which commits it while the loop goes on, instead of after the loop (by then
   * winston would hold the rest of the loop's infos in its stream buffers). Only while the file is
   * open and nothing else must go first, and while fewer than EARLY_HANDOVER × `highWaterMark`
   * records handed over are not yet committed. The worker says which are in shared memory, since no
   * answer can be read before the loop yields; their chunks go back to the writer at once
   * (`releaseCommitted`). So what the transport holds stays bounded by the disk's pace, and a loop
   * the disk keeps up with is never pushed back: pushed back, winston would park every later info
   * object of the loop in its stream buffer (a loop of 1M calls: 1.6 GB of RSS).
   */
  private handOverFilled(): void {
    if (!this.opened || this.openFailed || this.workerLost || this.queueClosed || this.foreign || this.closing !== undefined) return;
    // 'logged' listeners get each info after its own commit: their records go in whole commits.
    if (this.uncommittedInfos.length > 0) return;
    if ((this.dropped['queue-unavailable'] ?? 0) > this.noticedUnavailable) return;
    this.releaseCommitted();
    if (this.uncommittedRows() >= EARLY_HANDOVER * this.config.highWaterMark) return;
    const batch = this.uncommitted.takeFilled();
    this.flags[FLAG_WAITING] = this.uncommitted.length;
    this.launch(batch, [], true, true);
  }

  /**
   * Started after the current synchronous burst, which then goes into one transaction. A few
   * records (fewer than COMMIT_NOW_ROWS) go to the worker at the end of this turn of the event loop
   * (setImmediate: with what the turn's other callbacks log), and wait there up to `commitDelay` ms
   * for more, so a service that logs a record or two per turn pays for one commit every few ms, not
   * one per turn. No timer runs here: one would wake the application's event loop once a commit.
   */
  private startCommits(): void {
    const start =
      this.fewWaiting()
        ? new Promise<void>((resolve) => {
            const now = () => {
              clearImmediate(immediate);
              this.commitNow = undefined;
              queueMicrotask(resolve);
            };
            const immediate = setImmediate(now);
            this.commitNow = now;
          })
        : new Promise<void>((resolve) => queueMicrotask(resolve));
    this.committing = start.then(() => this.commitLoop()).catch(() => undefined); // a listener that threw (see commitLoop)
  }

  /**
   * A few records wait, and may wait for the end of the turn and then up to `commitDelay` in the
   * worker for more: fewer than COMMIT_NOW_ROWS (and than `highWaterMark`, so winston is not pushed
   * back), nobody awaits their commit, and the transport is not closing.
   */
  private fewWaiting(): boolean {
    const n = this.uncommitted.length;
    return (
      this.config.commitDelay > 0 &&
      n < COMMIT_NOW_ROWS &&
      n < this.config.highWaterMark &&
      this.held.length === 0 &&
      this.committedWaiters === 0 &&
      this.closing === undefined
    );
  }

  /**
   * winston's callback: at once, unless `highWaterMark` records wait for a commit, or the transport
   * paces winston and this turn of the event loop has already taken `highWaterMark` records.
   *
   * It paces winston from when it first holds a callback back until a turn ends with none held.
   * For a logger that writes its next records on 'drain', as a service honouring backpressure
   * does: readable-stream emits 'drain' inside the pipe's read loop, so once the transport lets it
   * go on, with each callback at once and the worker keeping up, its next records come in that
   * same loop, for as long as it logs. Its timers and I/O would wait for all of it (seconds,
   * measured), and every callback readable-stream defers with `process.nextTick` with them
   * (hundreds of MiB). A synchronous loop of log calls is not held back by this, unless it comes
   * in a turn that follows one where winston was.
   */
  private admit(callback: () => void): void {
    if (this.openFailed || (this.uncommitted.length < this.config.highWaterMark && (this.turnEnd === undefined || this.turnAccepted < this.config.highWaterMark))) {
      callback();
      return;
    }
    this.held.push(callback);
    this.pace();
  }

  /** Paces winston until the end of this turn of the event loop, counting what it accepts from now. */
  private pace(): void {
    if (this.turnEnd !== undefined) return;
    this.turnAccepted = 0;
    this.turnEnd = setImmediate(() => {
      this.turnEnd = undefined;
      // Held for a commit: the commit loop lets them go (through `releaseHeld`) once it took the records.
      if (this.held.length === 0 || this.uncommitted.length >= this.config.highWaterMark) return;
      // What they bring is paced too: the next turn counts from here.
      this.pace();
      for (const callback of this.held.splice(0)) callback();
    });
  }

  /**
   * There is room again: winston may go on, at the end of this turn (see `admit`). Not here: this
   * runs in a microtask, where winston's next records would come in the same turn.
   */
  private releaseHeld(): void {
    if (this.held.length > 0) this.pace();
  }

  /**
   * @internal The logger is in a burst when a commit carries, or the next one will carry, at least
   * `BURST_ROWS` records: records arrive faster than one commit takes, and the worker's scheduler
   * holds requests back for it. A test seam: the flags the worker's scheduler reads.
   */
  inBurst(): boolean {
    return inBurst(this.flags);
  }

  /**
   * Hands what was accepted to the worker until nothing waits here, without waiting for the commits:
   * the worker merges what queued up into one transaction. Each batch stays here, for the exit
   * spill, until its commit is known to have ended; up to MAX_FLIGHTS batches at once.
   */
  private async commitLoop(): Promise<void> {
    try {
      const rt = await this.runtime;
      // Records dropped while the file could not be opened: the notice goes first.
      const lost = this.dropped['queue-unavailable'] ?? 0;
      if (rt && !this.queueClosed && !this.workerLost && lost > this.noticedUnavailable) {
        const count = lost - this.noticedUnavailable;
        this.noticedUnavailable = lost;
        this.launch(RecordBatch.of([noticeRecord(count, 'queue-unavailable', this.config.overflow, this.context())]), [], false, false);
      }
      let launched = false;
      while (this.uncommitted.length > 0) {
        this.settleEnded();
        if (this.flights.length >= MAX_FLIGHTS || this.uncommittedRows() >= MAX_UNCOMMITTED_HWMS * this.config.highWaterMark) {
          await this.whenSettled(this.flights[0]!);
          continue;
        }
        // A few records came in while this loop waited for a flight to settle: they go at the end
        // of the turn (the loop ends, and starts again there).
        const few = this.fewWaiting();
        if (few && launched) break;
        launched = true;
        const batch = this.uncommitted.take();
        this.flags[FLAG_WAITING] = 0;
        const infos = this.uncommittedInfos;
        this.uncommittedInfos = [];
        this.commitOrKeep(batch, infos, rt, !few);
        // There is room again: winston may hand over the next records while this commit runs.
        // Only now: a callback can bring winston's next records, and a chunk they fill goes to the
        // worker at once (handOverFilled), after this batch.
        this.releaseHeld();
      }
    } finally {
      // Also when a listener of 'logged' or 'warn' threw: what waits is still committed (held
      // callbacks only exist while records wait, and are let go with them).
      this.committing = undefined;
      if (this.uncommitted.length > 0) this.startCommits();
    }
  }

  /** Records handed over to the worker whose commit it has not said in shared memory. */
  private uncommittedRows(): number {
    let rows = 0;
    for (const f of this.flights) if (!f.released) rows += f.rows;
    return rows;
  }

  /**
   * Settles, oldest first, the flights whose commit ended by the shared flags: the worker does not
   * answer a commit (its answer would wake this thread's event loop, once a commit), so this runs
   * when this thread has something to do anyway (the next commit), and when it waits for one
   * (`whenSettled`). A failure the flags count that has not been told here yet stops it: its
   * `append-failed` message settles that flight, and the ones before it.
   */
  private settleEnded(): void {
    // The seq first: a failure is counted before the seq of its batch is ended.
    const ended = Atomics.load(this.flags, FLAG_ENDED_SEQ);
    if (Atomics.load(this.flags, FLAG_FAILED) !== this.failuresHeard) return;
    while (this.flights.length > 0 && reached(ended, this.flights[0]!.seq)) this.settle(this.flights[0]!, undefined);
  }

  /** Resolves once `f` is settled: asks the worker to answer when its commit ended, if it has not yet. */
  private whenSettled(f: Flight): Promise<void> {
    this.settleEnded();
    this.ask(f, true);
    return f.done;
  }

  /**
   * An `ended` request for `f`, once (`now`: its commit starts at once, not after `commitDelay`, and
   * so does everything before it): its answer settles it and every flight before it.
   */
  private ask(f: Flight, now: boolean): void {
    if (f.settled || f.asked === 'now' || (f.asked === 'wait' && !now)) return;
    f.asked = now ? 'now' : 'wait';
    this.worker.request<void>({ op: 'ended', tid: this.tid, seq: f.seq, now }).then(
      () => this.settleEnded(),
      () => undefined, // the worker stopped ('lost' settles every flight) or the transport is closed there
    );
  }

  /** `f` left the worker: committed (`error` undefined: told to 'logged' listeners) or failed (counted). */
  private settle(f: Flight, error: unknown): void {
    if (!this.retire(f)) return;
    try {
      if (error !== undefined) this.drop('write-failed', f.rows, error);
      else for (const info of f.infos) this.emit('logged', info);
    } catch {
      // a listener of 'logged' or 'warn' threw: the flight is settled all the same
    } finally {
      f.resolve();
    }
  }

  /** Marks `f` settled, out of `flights`, its chunks back to the writer; false if it was already. */
  private retire(f: Flight): boolean {
    if (f.settled) return false;
    f.settled = true;
    const at = this.flights.indexOf(f);
    if (at >= 0) this.flights.splice(at, 1);
    if (!f.released) this.release(f);
    return true;
  }

  /**
   * The worker stopped: flights it said are committed are settled; the others may or may not have
   * gone in, and are written out beside the file (they may ship twice).
   */
  private settleLost(): void {
    const committed = Atomics.load(this.flags, FLAG_COMMITTED_SEQ);
    for (const f of [...this.flights]) {
      if (!f.released && !reached(committed, f.seq)) {
        try {
          writeSpill(this.file, this.config.destination, f.batch, RecordBatch.empty);
        } catch (e) {
          this.drop('write-failed', f.rows, e);
        }
      }
      this.retire(f);
      f.resolve();
    }
  }

  /**
   * Flights the worker has committed (it writes each one's seq in shared memory, in the commit's own
   * callback) that are not settled yet (none can be during a synchronous loop, or while the logger
   * runs on process.nextTick alone): their chunks go back to the writer now, so memory stays bounded
   * by what is not yet committed.
   */
  private releaseCommitted(): void {
    const committed = Atomics.load(this.flags, FLAG_COMMITTED_SEQ);
    for (const f of this.flights) {
      if (!reached(committed, f.seq)) return;
      if (!f.released) this.release(f);
    }
  }

  private release(f: Flight): void {
    f.released = true;
    this.uncommitted.recycle(f.batch);
    f.batch = RecordBatch.empty;
  }

  /** `batch` to the worker; or, when it cannot be committed, written out beside the file or dropped (counted). */
  private commitOrKeep(batch: RecordBatch, infos: Record<string, unknown>[], rt: boolean, now: boolean): void {
    if (!rt || this.workerLost) {
      // The file never opened before close() (or the worker stopped): what waits is written
      // out beside it, for the next transport that opens it; never beside a file that is not a queue.
      try {
        if (this.foreign) throw new VectorQueueError(`${this.file} is not a winston-vector queue`);
        writeSpill(this.file, this.config.destination, undefined, batch);
      } catch (err) {
        this.drop('write-failed', batch.length, err);
      }
      this.uncommitted.recycle(batch);
      return;
    }
    if (this.queueClosed) {
      this.drop('write-failed', batch.length, new VectorQueueError('the queue is not open'));
      this.uncommitted.recycle(batch);
      return;
    }
    this.launch(batch, infos, true, now);
  }

  /**
   * Hands `batch` to the worker to commit, `now` or after `commitDelay` there (see `hold` in
   * lib/delivery/worker.ts). Its flight settles (never rejects) once this thread knows the commit
   * ended; at once when 'logged' listeners wait to hear of it. `counted`: told to 'commit' listeners
   * (not the notice of records lost while the file could not be opened).
   */
  private launch(batch: RecordBatch, infos: Record<string, unknown>[], counted: boolean, now: boolean): void {
    const seq = ++this.appendSeq;
    Atomics.add(this.flags, FLAG_HANDED, batch.length);
    let resolve: () => void = () => undefined;
    const done = new Promise<void>((r) => (resolve = r));
    const flight: Flight = { batch, rows: batch.length, seq, infos, released: false, settled: false, asked: false, done, resolve };
    this.flights.push(flight);
    const tell = counted && this.listenerCount('commit') > 0;
    if (!this.handOver(batch, seq, now, tell)) this.worker.send({ op: 'append', tid: this.tid, seq, batch: batch.toShared(), now, tell });
    if (infos.length > 0) this.ask(flight, false);
  }

  /**
   * `batch` through the worker's ring (see RING_WRITE in lib/delivery/thread.ts) when all its rows
   * are in this transport's pooled chunks; each such chunk is told to the worker once, first.
   * False: it must go as a message.
   */
  private handOver(batch: RecordBatch, seq: number, now: boolean, tell: boolean): boolean {
    if (batch.length === 0) return false;
    const parts: number[] = [];
    for (const { chunk, start, rows } of batch.parts) {
      const index = this.uncommitted.poolIndex(chunk);
      if (index < 0) return false;
      parts.push(index, start, rows);
    }
    for (let i = 0; i < parts.length; i += 3) {
      const index = parts[i]!;
      if (this.chunksTold[index]) continue;
      this.worker.send({ op: 'chunk', tid: this.tid, index, buffer: this.uncommitted.pooled(index).buffer as SharedArrayBuffer });
      this.chunksTold[index] = true;
    }
    return this.worker.handOver(this.tid, this.flags, seq, parts, batch.length, batch.byteLength, now, tell);
  }

  /** The pooled chunks of `uncommitted` already told to the worker, by pool index. */
  private readonly chunksTold: boolean[] = [];

  /**
   * Counts dropped records exactly, per reason. The `'warn'` is limited to one per reason every
   * 10 s (carrying the count since the last one), so a full disk does not flood the logger.
   */
  private drop(reason: string, count: number, cause?: unknown): void {
    if (count === 0) return;
    this.dropped[reason] = (this.dropped[reason] ?? 0) + count;
    const w = this.dropWarnings.get(reason) ?? { at: 0, count: 0 };
    w.count += count;
    this.dropWarnings.set(reason, w);
    const now = Date.now();
    if (now - w.at < 10_000) return;
    const detail = cause === undefined ? '' : `: ${cause instanceof Error ? cause.message : String(cause)}`;
    this.warn(new VectorQueueError(`${w.count} record(s) dropped (${reason})${detail}`, { cause }));
    w.at = now;
    w.count = 0;
  }

  /** @internal A record lost before it reached `log()` (see `guardLogger`), counted with the others. */
  countDropped(reason: string, cause?: unknown): void {
    this.drop(reason, 1, cause);
  }

  /**
   * Every `'warn'` goes out through here: no secret of the options is in it, even if a receiver
   * echoed one. When nothing outside the package listens for `'warn'` (on the transport or on its
   * logger), a person still hears of each change of state, once, through `process.emitWarning`
   * (stderr; `node --no-warnings` silences it).
   */
  private warn(err: Error): void {
    const clean = this.config.secrets.redactError(err);
    this.emit('warn', clean);
    if (this.heard()) return;
    const kind = clean instanceof VectorDeliveryError ? clean.action : 'queue';
    const key = clean instanceof VectorDeliveryError ? `${clean.action}:${clean.status ?? ''}` : clean.message.replace(/\d+/g, '#');
    if (this.shown.has(key)) return;
    this.shown.add(key);
    process.emitWarning(`${clean.message} (listen for 'warn' on the transport or the logger to handle this)`, {
      type: 'VectorTransportWarning',
      code: `WINSTON_VECTOR_${kind.toUpperCase().replace(/-/g, '_')}`,
    });
  }

  /** States already told through `process.emitWarning` (cleared when delivery recovers). */
  private readonly shown = new Set<string>();

  /** Whether a listener of `'warn'` outside the package hears this transport (winston's own relay does not count). */
  private heard(): boolean {
    const relay = (this as unknown as { __winstonwarn?: unknown }).__winstonwarn;
    if (this.listeners('warn').some((l) => l !== relay)) return true;
    const parent = (this as unknown as { parent?: { listenerCount?(e: string): number } }).parent;
    return typeof parent?.listenerCount === 'function' && parent.listenerCount('warn') > 0;
  }

  /** A request was delivered after a failure: told to a person if the failure was. */
  private recovered(): void {
    if (this.shown.size === 0 || this.heard()) return;
    this.shown.clear();
    process.emitWarning(`delivery resumed: records reach ${this.config.url} again`, { type: 'VectorTransportWarning', code: 'WINSTON_VECTOR_RESUMED' });
  }

  /**
   * Resolves when every record logged so far is committed to the queue file (or counted as
   * dropped): from then on it survives a crash. Delivery is not waited for (see `flush()`).
   */
  committed(): Promise<void> {
    return this.holdingProcess(() => this.committedNow());
  }

  private async committedNow(): Promise<void> {
    // Records logged just now may still be on their way through winston's pipe.
    await new Promise((resolve) => setImmediate(resolve));
    // While the file cannot be opened, nothing can be committed: answer then instead of waiting
    // for an open that may take long (the records wait in memory, see start()).
    this.committedWaiters++;
    try {
      while (!this.openFailed) {
        const last = this.flights[this.flights.length - 1];
        if (this.committing === undefined && last === undefined) {
          if (this.held.length === 0) break;
          // winston was held back: its records come when the turn ends (see `admit`), then commit.
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        this.commitNow?.();
        const step = this.committing ?? this.whenSettled(last!);
        if (this.opened) await step;
        else await Promise.race([step, new Promise<void>((resolve) => this.onOpenFailed.push(resolve))]);
      }
    } finally {
      this.committedWaiters--;
    }
  }

  /**
   * Timers are unref'd, so the transport never keeps a process alive by itself; but a caller who
   * awaits `flush()` or `close()` must get an answer, so the process stays up for that (bounded) call.
   */
  private holdingProcess<T>(fn: () => Promise<T>): Promise<T> {
    return this.worker.hold(fn);
  }

  /** Ships what is queued now; resolves when it is delivered or this round failed. */
  flush(): Promise<FlushResult> {
    return this.holdingProcess(() => this.flushNow());
  }

  private async flushNow(): Promise<FlushResult> {
    if (this.openFailed) return { delivered: 0, pending: this.uncommitted.length };
    await this.committed();
    const rt = (await this.runtime) && !this.workerLost;
    if (!rt || this.closing) return { delivered: 0, pending: rt ? await this.worker.request<number>({ op: 'pending', tid: this.tid }).catch(() => 0) : 0 };
    return this.worker.request<FlushResult>({ op: 'flush', tid: this.tid });
  }

  /** Records waiting in the queue file (from any process sharing it). */
  pendingCount(): Promise<number> {
    return this.holdingProcess(() => this.pendingNow());
  }

  private async pendingNow(): Promise<number> {
    if (this.openFailed) return this.uncommitted.length;
    await this.committed();
    const rt = (await this.runtime) && !this.workerLost;
    return rt && !this.queueClosed ? this.worker.request<number>({ op: 'pending', tid: this.tid }) : 0;
  }

  stats(): Promise<TransportStats> {
    return this.holdingProcess(() => this.statsNow());
  }

  private async statsNow(): Promise<TransportStats> {
    const rt = this.openFailed || this.workerLost ? false : await this.runtime;
    const w = rt && !this.queueClosed ? await this.worker.request<WorkerStats>({ op: 'stats', tid: this.tid }) : undefined;
    const q = w?.queue ?? { pending: 0, oldestPendingAt: null, deadLetters: 0, queueBytes: 0 };
    const s = w?.delivery;
    return {
      pending: q.pending + (this.openFailed ? this.uncommitted.length : 0),
      delivered: s?.delivered ?? 0,
      retried: s?.retried ?? 0,
      unanswered: s?.unanswered ?? 0,
      restored: this.restored,
      deadLettered: s?.deadLettered ?? 0,
      deadLetters: q.deadLetters,
      dropped: { ...this.dropped },
      oldestPendingAgeMs: q.oldestPendingAt === null ? null : Math.max(0, Date.now() - q.oldestPendingAt),
      queueBytes: q.queueBytes,
      lastError: s?.lastError ? { ...s.lastError, message: this.config.secrets.redact(s.lastError.message) } : null,
      lastSuccessAt: s?.lastSuccessAt ?? null,
    };
  }

  /**
   * Stops the scheduler, ships for up to `closeTimeout`, and closes the queue file. What is not
   * delivered by then stays on disk and ships at the next start. Safe to call more than once.
   */
  override close(): Promise<void> {
    this.closing ??= this.holdingProcess(() => this.shutdown(this.config.closeTimeout));
    return this.closing;
  }

  private async shutdown(timeout: number): Promise<void> {
    // An open still being retried stops; what waits for it is then written out beside the file.
    if (!this.opened) this.worker.send({ op: 'stop-opening', tid: this.tid });
    await this.committed();
    try {
      await this.worker.request({ op: 'close', tid: this.tid, timeout });
    } catch (err) {
      this.warn(new VectorQueueError(`close failed: ${(err as Error).message}`, { cause: err }));
    } finally {
      this.queueClosed = true;
      live.delete(this);
      this.worker.unregister(this.tid);
      this.emit('closed');
    }
  }

  /** @internal A test seam: messages this transport heard from the delivery worker so far (each one woke the event loop). */
  messagesHeard(): number {
    return this.worker.heard.get(this.tid) ?? 0;
  }

  /**
   * @internal A test seam: batches handed to the delivery worker so far through shared memory and
   * as messages, and those of shared memory that did not wake it (by every transport of the process).
   */
  handedOver(): { ring: number; message: number; unwoken: number } {
    return { ...this.worker.handed };
  }

  /** @internal A test seam: runs SQL on the transport's own connection, in the delivery worker. */
  queueExec(sql: string): Promise<void> {
    return this.holdingProcess(() => this.worker.request<void>({ op: 'exec', tid: this.tid, sql }));
  }

  /** `logger.end()` ends the transport stream: ship and close before 'finish'. */
  override _final(callback: (error?: Error | null) => void): void {
    this.close().then(() => callback(), () => callback());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}


