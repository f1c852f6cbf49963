import TransportStream from 'winston-transport';
import { BatchWriter } from './batch';
import { VectorQueueError } from './errors';
import { LevelTable } from './levels';
import { type ResolvedOptions, type VectorTransportOptions, resolveOptions } from './options';
import { buildRecord, type RecordContext } from './record';
import { prepareDatabaseFile, SqliteQueue } from './queue';
import { Scheduler } from './scheduler';
import { toJson } from './serialize';
import { HttpShipper } from './shipper';

/** A commit of this many records or more means the logger is in a burst (see `inBurst`). */
const BURST_ROWS = 1000;

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
  /** Rows in the dead-letter table now (also those of earlier runs). */
  readonly deadLetters: number;
  /**
   * Records dropped, by reason: `queue-full`, `disk-full`, `max-age` (the bounds), `write-failed`
   * (the file failed), `format-error`, `unserializable`, `dead-letter-overflow` (old dead letters).
   */
  readonly dropped: Readonly<Record<string, number>>;
  /** Age of the oldest pending record, in ms; null when none is pending. */
  readonly oldestPendingAgeMs: number | null;
  /** Bytes the queue database uses now (pages in use), against `maxQueueBytes`. */
  readonly queueBytes: number;
  readonly lastError: { readonly message: string; readonly status: number | undefined; readonly at: Date } | null;
  readonly lastSuccessAt: Date | null;
}

interface Runtime {
  readonly queue: SqliteQueue;
  readonly scheduler: Scheduler;
}

type WriteChunk = { chunk: Record<string, unknown> };

/**
 * A winston transport that commits every record to a local SQLite queue before acknowledging it,
 * and ships the queue in batches to Vector's `http_server` source.
 */
export class VectorTransport extends TransportStream {
  /** The options in force, after defaults and validation. Private: it holds the Authorization header. */
  private readonly config: ResolvedOptions;
  private readonly runtime: Promise<Runtime | undefined>;
  private readonly shipper: HttpShipper;
  private readonly extraFields: Readonly<Record<string, unknown>>;
  private recordContext: { source: unknown; ctx: RecordContext } | undefined;
  /**
   * Records built and waiting for the next commit, as UTF-8 in reused chunks (lib/batch.ts), and
   * their infos, for 'logged' listeners.
   */
  private readonly uncommitted = new BatchWriter();
  private uncommittedInfos: Record<string, unknown>[] = [];
  /** winston's callbacks held back while `highWaterMark` records wait. */
  private held: Array<() => void> = [];
  /** The commit loop, while it runs. */
  private committing: Promise<void> | undefined;
  /** Records in the commit under way (0 between commits). */
  private committingRows = 0;
  private readonly dropped: Record<string, number> = {};
  private readonly dropWarnings = new Map<string, { at: number; count: number }>();
  private closing: Promise<void> | undefined;
  private queueClosed = false;

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
    const file = prepareDatabaseFile(this.config.dbPath);
    this.extraFields = toJson(this.config.extraFields) as Record<string, unknown>;
    this.shipper = new HttpShipper({ ...this.config, tls: this.config.tls });
    this.runtime = this.start(file);
  }

  private async start(file: string): Promise<Runtime | undefined> {
    const c = this.config;
    try {
      const queue = await SqliteQueue.open(file, {
        leaseMs: c.leaseTimeout,
        synchronous: c.synchronous,
        busyTimeout: 10_000,
        maxQueueBytes: c.maxQueueBytes,
        overflow: c.overflow,
        maxAge: c.maxAge,
        maxDeadLetters: c.maxDeadLetters,
        onWarn: (message, cause) => this.warn(new VectorQueueError(message, { cause })),
        onDrop: (reason, count) => this.drop(reason, count),
        notice: (count, reason) => this.notice(count, reason),
      });
      const scheduler = new Scheduler(queue, this.shipper, { ...c, burst: () => this.inBurst() }, (err) => this.warn(err));
      scheduler.start();
      return { queue, scheduler };
    } catch (err) {
      const error = new VectorQueueError(`cannot open the queue file ${JSON.stringify(file)}: ${(err as Error).message}`, { cause: err });
      // After construction, so a listener attached right after `new` sees it.
      setImmediate(() => this.emit('error', error));
      return undefined;
    }
  }

  /** The record context, made again only when winston hands the transport another level set. */
  private context(): RecordContext {
    const levels = (this as unknown as { levels?: Record<string, number> }).levels;
    let cached = this.recordContext;
    if (cached === undefined || cached.source !== levels) {
      cached = {
        source: levels,
        ctx: {
          project: this.config.project,
          table: this.config.table,
          extraFields: this.extraFields,
          idField: this.config.idField,
          maxRecordBytes: this.config.maxRecordBytes,
          levels: new LevelTable(levels, this.config.levelNumbers),
        },
      };
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

  /**
   * winston-transport's `_write`, except that a transport `format` that throws (or an info that
   * cannot even be copied) drops that record, counted as `format-error`, instead of throwing into
   * the caller's log call.
   */
  override _write(info: Record<string | symbol, unknown>, _enc: unknown, callback: (error?: Error | null) => void): void {
    let accepted: boolean;
    try {
      accepted = (this as unknown as { _accept(w: { chunk: unknown }): boolean })._accept({ chunk: info });
    } catch (err) {
      this.drop('format-error', 1, err);
      callback(null);
      return;
    }
    if (!accepted) {
      callback(null);
      return;
    }
    if (!this.format) {
      this.log(info as Record<string, unknown>, callback as () => void);
      return;
    }
    let transformed: Record<string, unknown> | false;
    try {
      transformed = this.format.transform({ ...info } as never, this.format.options) as Record<string, unknown> | false;
    } catch (err) {
      this.drop('format-error', 1, err);
      callback(null);
      return;
    }
    if (transformed) this.log(transformed, callback as () => void);
    else callback(null);
  }

  /** winston calls this with records its stream buffered while the transport pushed back. */
  override logv(chunks: WriteChunk[], callback: () => void): void {
    for (const { chunk } of chunks) {
      let info: Record<string, unknown> | false = chunk;
      if (this.format) {
        try {
          info = this.format.transform({ ...chunk } as never, this.format.options) as Record<string, unknown> | false;
        } catch (err) {
          this.drop('format-error', 1, err);
          continue;
        }
      }
      if (info) this.accept(info);
    }
    this.admit(callback);
  }

  private accept(info: Record<string, unknown>): void {
    try {
      this.uncommitted.write(buildRecord(info, this.context()));
      // The info is kept until the commit only for those who listen to 'logged'.
      if (this.listenerCount('logged') > 0) this.uncommittedInfos.push(info);
    } catch (err) {
      // buildRecord guards every access; this is the last net so one record never takes others down.
      this.drop('unserializable', 1, err);
    }
    if (this.committing === undefined) this.startCommits();
  }

  private startCommits(): void {
    // Started after the current synchronous burst, which then goes into one transaction.
    this.committing = new Promise<void>((resolve) => queueMicrotask(resolve))
      .then(() => this.commitLoop())
      .catch(() => undefined); // a listener that threw (see commitLoop)
  }

  private admit(callback: () => void): void {
    if (this.uncommitted.length < this.config.highWaterMark) callback();
    else this.held.push(callback);
  }

  /**
   * The logger is in a burst when a commit carries, or the next one will carry, at least
   * `BURST_ROWS` records: records arrive faster than one commit takes. Requests wait for it.
   */
  private inBurst(): boolean {
    return this.committingRows >= BURST_ROWS || this.uncommitted.length >= BURST_ROWS;
  }

  /** Commits what was accepted, one transaction per round, until nothing waits. */
  private async commitLoop(): Promise<void> {
    try {
      const rt = await this.runtime;
      while (this.uncommitted.length > 0) {
        const batch = this.uncommitted.take();
        const infos = this.uncommittedInfos;
        this.uncommittedInfos = [];
        // There is room again: winston may hand over the next records while this commit runs.
        for (const callback of this.held.splice(0)) callback();
        try {
          if (!rt || this.queueClosed) throw new VectorQueueError('the queue is not open');
          this.committingRows = batch.length;
          try {
            await rt.queue.append(batch);
          } finally {
            this.committingRows = 0;
            this.uncommitted.recycle(batch);
          }
          rt.scheduler.notify(batch.length);
        } catch (err) {
          this.drop('write-failed', batch.length, err);
          continue;
        }
        for (const info of infos) this.emit('logged', info);
      }
    } finally {
      // Also when a listener of 'logged' or 'warn' threw: what waits is still committed (held
      // callbacks only exist while records wait, and are let go with them).
      this.committing = undefined;
      if (this.uncommitted.length > 0) this.startCommits();
    }
  }

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

  /** Every `'warn'` goes out through here: no secret of the options is in it, even if a receiver echoed one. */
  private warn(err: Error): void {
    this.emit('warn', this.config.secrets.redactError(err));
  }

  /** The record shipped downstream in place of dropped ones, so the gap shows where logs are read. */
  private notice(count: number, reason: string): string {
    return buildRecord(
      { level: 'warning', message: `${count} records dropped: ${reason}`, dropped: count, reason, overflow: this.config.overflow },
      this.context(),
    );
  }

  /**
   * Resolves when every record logged so far is committed to the queue file (or counted as
   * dropped): from then on it survives a crash. Delivery is not waited for (see `flush()`).
   */
  async committed(): Promise<void> {
    // Records logged just now may still be on their way through winston's pipe.
    await new Promise((resolve) => setImmediate(resolve));
    while (this.committing) await this.committing;
  }

  /**
   * Timers are unref'd, so the transport never keeps a process alive by itself; but a caller who
   * awaits `flush()` or `close()` must get an answer, so the process stays up for that (bounded) call.
   */
  private async holdingProcess<T>(fn: () => Promise<T>): Promise<T> {
    const keepAlive = setInterval(() => undefined, 60_000);
    try {
      return await fn();
    } finally {
      clearInterval(keepAlive);
    }
  }

  /** Ships what is queued now; resolves when it is delivered or this round failed. */
  flush(): Promise<FlushResult> {
    return this.holdingProcess(() => this.flushNow());
  }

  private async flushNow(): Promise<FlushResult> {
    await this.committed();
    const rt = await this.runtime;
    if (!rt || this.closing) return { delivered: 0, pending: rt ? await rt.queue.pendingCount().catch(() => 0) : 0 };
    const before = rt.scheduler.stats.delivered;
    await rt.scheduler.flush();
    return { delivered: rt.scheduler.stats.delivered - before, pending: await rt.queue.pendingCount() };
  }

  /** Records waiting in the queue file (from any process sharing it). */
  async pendingCount(): Promise<number> {
    await this.committed();
    const rt = await this.runtime;
    return rt && !this.queueClosed ? rt.queue.pendingCount() : 0;
  }

  async stats(): Promise<TransportStats> {
    const rt = await this.runtime;
    const q = rt && !this.queueClosed ? await rt.queue.stats() : { pending: 0, oldestPendingAt: null, deadLetters: 0, queueBytes: 0 };
    const s = rt?.scheduler.stats;
    return {
      pending: q.pending,
      delivered: s?.delivered ?? 0,
      retried: s?.retried ?? 0,
      unanswered: s?.unanswered ?? 0,
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
    this.closing ??= this.holdingProcess(() => this.shutdown());
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await this.committed();
    const rt = await this.runtime;
    try {
      if (rt) {
        await rt.scheduler.close(this.config.closeTimeout);
        await rt.queue.close();
      }
    } catch (err) {
      this.warn(new VectorQueueError(`close failed: ${(err as Error).message}`, { cause: err }));
    } finally {
      this.queueClosed = true;
      this.shipper.close();
      this.emit('closed');
    }
  }

  /** `logger.end()` ends the transport stream: ship and close before 'finish'. */
  override _final(callback: (error?: Error | null) => void): void {
    this.close().then(() => callback(), () => callback());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}


