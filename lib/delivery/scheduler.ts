import pRetry from 'p-retry';
import { VectorDeliveryError } from '../errors';
import { backoffDelay } from './policy';
import type { Queue, QueuedRecord } from '../queue/queue';
import type { ShipFailure, Shipper, ShipResult } from './shipper';

export interface SchedulerOptions {
  readonly batchSize: number;
  readonly flushInterval: number;
  readonly maxRetries: number;
  readonly retryDelay: number;
  readonly maxRetryDelay: number;
  /** How long a claim holds records; a batch sent later than half of it renews its lease first. */
  readonly leaseTimeout: number;
  /** Rows claimed at once (a window), in whole batches, at least one. Default 1000. */
  readonly claimRows?: number;
  /**
   * Characters of record text one window may hold, at most (default WINDOW_CHARS). A claim writes its
   * rows again, into the WAL: the queue gives its WAL budget here, so that a claim stays inside the
   * room `maxQueueBytes` keeps for the WAL.
   */
  readonly claimChars?: number;
  /**
   * True while the logger is committing a burst: requests then wait for it (see `BURST_HOLD_MS`),
   * so shipping does not take the main thread and SQLite's thread from the logger.
   */
  readonly burst?: () => boolean;
}

/** The longest a window's requests wait for a burst to be committed, in ms, counted from the claim. */
const BURST_HOLD_MS = 1000;

/**
 * After the commit that ends a burst, how long a held request waits for the burst's next commit, in
 * ms: a flood logs a turn of the event loop's records at a time, and its commits come a few ms apart.
 */
const BURST_QUIET_MS = 20;

/** At most one warning about unanswered requests this often, in ms. */
const UNANSWERED_WARN_MS = 10_000;

/** Characters of record text one window may hold by default: with long records, windows get shorter. */
const WINDOW_CHARS = 8 * 1024 * 1024;

/**
 * Rows claimed at once: ~1000 (whole batches), so one claim on SQLite's thread serves several
 * requests and runs while one of them is in flight (a claim of 4000 ran through several, and made
 * one request in four wait at `batchSize: 1000`); fewer when the records seen so far are long
 * (`avgChars`; one batch until a claim has shown their length) so that a window holds about
 * `chars`, and always at least one batch.
 */
function claimSize(batchSize: number, avgChars: number, rows = 1000, chars = WINDOW_CHARS): number {
  const byChars = avgChars > 0 ? Math.floor(chars / avgChars) : batchSize;
  return batchSize * Math.max(1, Math.floor(Math.min(rows, byChars) / batchSize));
}

export interface DeliveryStats {
  delivered: number;
  retried: number;
  /** Requests that got no answer (a timeout, a connection closed first): their records may arrive twice. */
  unanswered: number;
  deadLettered: number;
  lastError: { message: string; status: number | undefined; at: Date } | null;
  lastSuccessAt: Date | null;
}

/** Thrown inside p-retry for an answer worth another attempt. */
class RetryableAnswer extends Error {
  constructor(readonly result: ShipFailure) {
    super(result.detail);
  }
}

/** Waits `ms`, less if `signal` aborts or the function handed to `onWake` is called. */
function sleep(ms: number, signal: AbortSignal, onWake?: (wake: () => void) => void): Promise<void> {
  if (ms <= 0 || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal.addEventListener('abort', done, { once: true });
    onWake?.(done);
  });
}

/**
 * Decides when to ship: when `batchSize` records are pending, every `flushInterval`, on `flush()`,
 * and after a backoff. One request is in flight at a time; a backlog drains batch after batch.
 * A failed round leaves its records on disk, released in order, and waits with backoff (full
 * jitter, capped; `Retry-After` when the answer had one; the cap when the receiver refuses the
 * configuration) before the next.
 */
export class Scheduler {
  readonly stats: DeliveryStats = { delivered: 0, retried: 0, unanswered: 0, deadLettered: 0, lastError: null, lastSuccessAt: null };
  /** Unanswered requests and their records since the last warning about them, and when that was. */
  private unansweredNote = { at: 0, requests: 0, records: 0, detail: '' };
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private again = false;
  private interval: NodeJS.Timeout | undefined;
  private backoffTimer: NodeJS.Timeout | undefined;
  private backoffUntil = 0;
  private failedRounds = 0;
  /** Records committed here (told by `notify`) and not yet claimed: a hint, corrected by short claims. */
  private unshipped = 0;
  /**
   * The next round may ship a batch of fewer than `batchSize` records: it was asked for by the
   * interval, a start, a backoff's end, `flush()` or `close()`. A round that `batchSize` committed
   * records started claims whole batches only, so a service logging steadily sends full batches,
   * not a full one and the few records committed while it was in flight.
   */
  private partialNext = false;
  /** The running round may ship a batch of fewer than `batchSize` records (see `partialNext`). */
  private partialRound = false;
  private state = 'ok';
  private closing = false;
  /**
   * `flush()` callers: each waits for the ids up to `untilId`, and for a round that began after it
   * did (`after` is the number of rounds begun at the call).
   */
  private waiters: Array<{ untilId: number; after: number; resolve: () => void }> = [];
  /** Rounds begun: a round is one pass of `drain`'s loop, from a claim to an empty queue or a failure. */
  private rounds = 0;
  /** Mean length of the record text in the last claim that returned any (0 before one did). */
  private avgChars = 0;
  /** Lets a request held for a burst go (set while one is held). */
  private burstOver: (() => void) | undefined;
  /** True while a held request waits out BURST_QUIET_MS (a commit does not cut that wait short). */
  private quiet = false;
  /** Commits of a burst's size ended so far (see `notify`). */
  private burstCommits = 0;
  /**
   * Ids of records a round claimed and could not give back (the release failed: a full disk):
   * given back before the next round claims, so they wait for no lease to expire.
   */
  private unreleased: number[] = [];

  constructor(
    private readonly queue: Queue,
    private readonly shipper: Shipper,
    private readonly options: SchedulerOptions,
    private readonly onWarn: (err: VectorDeliveryError) => void,
    /** Told when a request is delivered after a failure was warned about. */
    private readonly onRecovered?: () => void,
  ) {}

  /** Starts the interval and ships what an earlier run left behind. */
  start(): void {
    this.interval = setInterval(() => this.kick(false, true), this.options.flushInterval);
    this.interval.unref();
    this.kick(false, true);
  }

  /** Called after a commit ended: `appended` records went in; `burstSized`, it was a burst's commit. */
  notify(appended: number, burstSized = false): void {
    this.unshipped += appended;
    if (burstSized) this.burstCommits++;
    if (this.burstOver && !this.quiet && !this.options.burst?.()) this.burstOver();
    if (this.unshipped >= this.options.batchSize) this.kick(false, false);
  }

  /** Ships until everything that was queued at the call is delivered, or a round fails. */
  async flush(): Promise<void> {
    if (this.closing) return;
    const untilId = await this.queue.maxId();
    if (untilId === 0) return;
    await new Promise<void>((resolve) => {
      this.waiters.push({ untilId, after: this.rounds, resolve });
      this.burstOver?.(); // a request held for a burst goes now
      this.kick(true, true);
    });
  }

  /** Stops the timers, ships until `timeoutMs` runs out, and aborts whatever is still in flight. */
  async close(timeoutMs: number): Promise<void> {
    if (this.closing) return this.running;
    this.closing = true;
    this.burstOver?.();
    clearInterval(this.interval);
    clearTimeout(this.backoffTimer);
    const deadline = setTimeout(() => this.abort.abort(), timeoutMs);
    deadline.unref();
    try {
      if (timeoutMs === 0) this.abort.abort();
      await this.running;
      if (!this.abort.signal.aborted) await this.run();
    } finally {
      clearTimeout(deadline);
      this.abort.abort();
      // Leases still not given back would wait for their expiry at the next start.
      if (this.unreleased.length > 0) await this.queue.release(this.unreleased).then(() => (this.unreleased = []), () => undefined);
      this.settleWaiters(Infinity, Infinity);
    }
  }

  /** Starts a round, or another after the running one; `force` ignores a backoff, `partial` see `partialNext`. */
  private kick(force: boolean, partial: boolean): void {
    if (this.abort.signal.aborted) return;
    if (!force && Date.now() < this.backoffUntil) return;
    if (partial) this.partialNext = true;
    if (this.running) {
      this.again = true;
      return;
    }
    void this.run();
  }

  private run(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.drain()
      .catch((err: unknown) => {
        this.fail({ action: 'retry', detail: `queue error: ${err instanceof Error ? err.message : String(err)}`, unanswered: false });
        this.scheduleBackoff(this.options.maxRetryDelay);
      })
      .finally(() => {
        this.running = undefined;
        // A flush() that came while the last round ran gets a round of its own: the one that ran
        // may have failed before the receiver came back.
        this.settleWaiters(Infinity);
        if (this.waiters.length > 0) this.kick(true, true);
      });
    return this.running;
  }

  /**
   * Ships batch after batch until the queue is empty or a round fails. Records are claimed a window
   * of batches at a time, and the next window is claimed as soon as the current one is taken,
   * while it ships (one request in flight, no wait for a claim between two); if a request fails,
   * every record claimed and not delivered goes back to the queue, so order is kept. After a failed
   * round, the next one claims a single batch first (a probe): while the receiver stays down, a
   * round reads one batch from the file, not two windows.
   */
  private async drain(): Promise<void> {
    const { batchSize, leaseTimeout } = this.options;
    do {
      this.again = false;
      this.rounds++;
      this.partialRound = this.partialNext;
      this.partialNext = false;
      if (this.unreleased.length > 0) {
        await this.queue.release(this.unreleased);
        this.unreleased = [];
      }
      let probing = this.failedRounds > 0;
      let claimedAt = Date.now();
      const first = probing ? batchSize : this.windowLimit();
      if (first === 0) continue; // fewer than a batch committed, and nobody asked for less
      let window = await this.claim(first);
      let ahead: { at: number; records: Promise<QueuedRecord[]> } | undefined;
      /** Gives back `held` and whatever the claim ahead took: nothing waits for a lease to expire. */
      const giveBack = async (held: readonly QueuedRecord[]) => {
        const next = ahead ? await ahead.records.catch(() => []) : [];
        ahead = undefined;
        const ids = [...held, ...next].map((r) => r.id);
        this.unshipped += ids.length; // pending again
        try {
          await this.queue.release(ids);
        } catch (err) {
          this.unreleased.push(...ids);
          throw err;
        }
      };
      this.settleWaiters(window.length > 0 ? window[0]!.id - 1 : Infinity);
      while (window.length > 0) {
        if (this.abort.signal.aborted) {
          await giveBack(window);
          return;
        }
        const batch = window.slice(0, batchSize);
        window = window.slice(batchSize);
        await this.waitForBurst(claimedAt + BURST_HOLD_MS);
        // A lease is only taken over once it expires: well within it, it is surely still ours.
        const fresh = Date.now() - claimedAt < leaseTimeout / 2;
        const aheadLimit = ahead || probing ? 0 : this.windowLimit();
        if (aheadLimit > 0) {
          const records = this.claim(aheadLimit);
          records.catch(() => undefined); // a failed claim holds nothing; it is thrown where awaited
          ahead = { at: Date.now(), records };
        }
        let failure: ShipFailure | undefined;
        try {
          failure = await this.ship(batch, fresh);
        } catch (err) {
          // A queue error: give every lease back before the round ends.
          await giveBack([...batch, ...window]).catch(() => undefined);
          throw err;
        }
        if (failure) {
          await giveBack([...batch, ...window]);
          this.failedRounds++;
          const wait =
            failure.action === 'blocked'
              ? this.options.maxRetryDelay
              : (failure.retryAfter !== undefined
                ? Math.min(failure.retryAfter, this.options.maxRetryDelay)
                : backoffDelay(this.failedRounds, this.options.retryDelay, this.options.maxRetryDelay));
          this.scheduleBackoff(wait);
          return;
        }
        this.failedRounds = 0;
        this.backoffUntil = 0;
        if (window.length === 0 && ahead) {
          const next = ahead;
          ahead = undefined;
          window = await next.records;
          claimedAt = next.at;
        } else if (window.length === 0 && probing) {
          // The probe went through: back to whole windows.
          probing = false;
          claimedAt = Date.now();
          const limit = this.windowLimit();
          window = limit > 0 ? await this.claim(limit) : [];
        }
        this.settleWaiters(window.length > 0 ? window[0]!.id - 1 : Infinity);
      }
    } while (this.again && !this.abort.signal.aborted);
  }

  /**
   * While the logger commits a burst, the next request waits until the burst is committed (the
   * worker calls `notify` after each commit) and no commit of a burst's size has ended for
   * BURST_QUIET_MS, at most until `deadline`; never on close, on an abort, or while `flush()`
   * callers wait.
   */
  private async waitForBurst(deadline: number): Promise<void> {
    const burst = this.options.burst;
    if (!burst?.()) return;
    const wake = (w: () => void) => (this.burstOver = w);
    while (!this.closing && this.waiters.length === 0 && !this.abort.signal.aborted && Date.now() < deadline) {
      if (burst()) {
        await sleep(deadline - Date.now(), this.abort.signal, wake);
        this.burstOver = undefined;
        continue;
      }
      const seen = this.burstCommits;
      this.quiet = true;
      try {
        await sleep(Math.min(BURST_QUIET_MS, deadline - Date.now()), this.abort.signal, wake);
      } finally {
        this.quiet = false;
        this.burstOver = undefined;
      }
      if (this.burstCommits === seen && !burst()) return;
    }
  }

  private windowSize(): number {
    return claimSize(this.options.batchSize, this.avgChars, this.options.claimRows, this.options.claimChars);
  }

  /**
   * How many records the next claim of this round takes: a window, or in a round that ships whole
   * batches only, the whole batches of what was committed and not yet claimed (0: claim nothing).
   */
  private windowLimit(): number {
    const window = this.windowSize();
    if (this.partialRound || this.closing || this.waiters.length > 0) return window;
    const { batchSize } = this.options;
    return Math.min(window, Math.floor(this.unshipped / batchSize) * batchSize);
  }

  /**
   * Claims up to `limit` records and learns their length, so the next window holds about `claimChars`.
   * `unshipped` loses what the claim took; a claim that found fewer than `limit` loses the whole
   * `limit` (the hint counted records another process shipped, or a round asked for less took).
   */
  private async claim(limit: number): Promise<QueuedRecord[]> {
    const records = await this.queue.claim(limit);
    this.unshipped = Math.max(0, this.unshipped - (records.length < limit ? limit : records.length));
    if (records.length === 0) return records;
    let chars = 0;
    for (const r of records) chars += r.body.length;
    this.avgChars = chars / records.length;
    return records;
  }

  private scheduleBackoff(wait: number): void {
    this.backoffUntil = Date.now() + wait;
    clearTimeout(this.backoffTimer);
    if (this.closing) return;
    this.backoffTimer = setTimeout(() => this.kick(true, true), wait);
    this.backoffTimer.unref();
  }

  /**
   * Flush callers waiting for ids up to `doneThrough` are answered. `Infinity` (the queue held
   * nothing more to claim, or the round ended) answers only those that called before the round
   * began, unless `before` says otherwise: a record committed after the claim was not in it.
   */
  private settleWaiters(doneThrough: number, before = this.rounds): void {
    if (this.waiters.length === 0) return;
    const keep: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (w.untilId <= doneThrough && (doneThrough !== Infinity || w.after < before)) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }

  /**
   * Delivers one batch: retries what is worth retrying, splits on 413, bisects on 400 down to the
   * records that stay rejected and dead-letters them. Returns the failure that ends the round, if any.
   */
  private async ship(claimed: readonly QueuedRecord[], justClaimed = true): Promise<ShipFailure | undefined> {
    const { result, records } = await this.sendWithRetries(claimed, justClaimed);
    if (!result) return undefined; // every record was taken over by another process
    const ids = records.map((r) => r.id);
    switch (result.action) {
      case 'delivered':
        // Not awaited: the next request need not wait for the delete. The queue runs its operations
        // in order, so whatever comes next (a claim, a count, close) sees the batch gone.
        this.queue.ack(ids).catch((err: unknown) => this.fail({ action: 'retry', detail: `queue error: ${(err as Error).message}`, unanswered: false }));
        this.stats.delivered += records.length;
        this.stats.lastSuccessAt = new Date();
        this.queue.note?.('last_success', `${records.length} ${records.length === 1 ? 'record' : 'records'} delivered`, this.stats.lastSuccessAt.getTime());
        if (this.state !== 'ok') this.onRecovered?.();
        this.state = 'ok';
        this.reportUnanswered();
        return undefined;
      case 'split':
      case 'rejected': {
        if (records.length === 1) {
          const reason = result.detail;
          const moved = await this.queue.deadLetter(ids, result.status, reason);
          this.stats.deadLettered += moved;
          this.onWarn(
            new VectorDeliveryError(`record ${ids[0]} moved to the dead-letter table: ${reason}`, {
              status: result.status,
              action: 'dead-letter',
              records: 1,
            }),
          );
          return undefined;
        }
        const mid = Math.ceil(records.length / 2);
        return (await this.ship(records.slice(0, mid), false)) ?? (await this.ship(records.slice(mid), false));
      }
      default:
        this.fail(result, records.length);
        return result;
    }
  }

  /**
   * A request that got no answer may still have been accepted, so its records, sent again, may
   * arrive twice. Counted at once; said in a `'warn'` once a later request is delivered (while the
   * receiver stays unreachable, the failure's own warning says enough), at most every 10 s.
   */
  private noteUnanswered(records: number, result: ShipFailure): void {
    this.stats.unanswered++;
    const n = this.unansweredNote;
    n.requests++;
    n.records += records;
    n.detail = result.detail;
  }

  private reportUnanswered(): void {
    const n = this.unansweredNote;
    if (n.requests === 0 || Date.now() - n.at < UNANSWERED_WARN_MS) return;
    this.onWarn(
      new VectorDeliveryError(
        `${n.requests} request(s) got no answer (last: ${n.detail}); their ${n.records} record(s) were sent again and may have arrived twice (set idField to deduplicate)`,
        { status: undefined, action: 'unanswered', records: n.records },
      ),
    );
    this.unansweredNote = { at: Date.now(), requests: 0, records: 0, detail: '' };
  }

  private fail(result: ShipFailure, records = 0): void {
    const message = result.detail;
    this.stats.lastError = { message, status: result.status, at: new Date() };
    this.queue.note?.('last_error', message);
    const code = (result.cause as (Error & { code?: string }) | undefined)?.code;
    const state = `${result.action}:${result.status ?? code ?? message}`;
    if (state === this.state) return;
    this.state = state;
    const what = result.action === 'blocked' ? 'delivery blocked (records kept, retried at the cap)' : 'delivery failed (records kept, will retry)';
    this.onWarn(new VectorDeliveryError(`${what}: ${message}`, { status: result.status, action: result.action === 'blocked' ? 'blocked' : 'retry', records, cause: result.cause }));
  }

  /**
   * Sends with up to `maxRetries` attempts. Before every attempt but the one right after the claim,
   * the lease is renewed: records another process took over meanwhile (this one was paused past its
   * lease) are left out, so they are never sent twice by two owners.
   */
  private async sendWithRetries(
    claimed: readonly QueuedRecord[],
    justClaimed: boolean,
  ): Promise<{ result: ShipResult | undefined; records: readonly QueuedRecord[] }> {
    let records = claimed;
    let last: ShipResult = { action: 'retry', detail: 'aborted before sending', unanswered: false };
    try {
      const result = await pRetry(
        async (attempt) => {
          if (attempt > 1 || !justClaimed) {
            const held = new Set(await this.queue.renew(records.map((r) => r.id)));
            if (held.size < records.length) records = records.filter((r) => held.has(r.id));
            if (records.length === 0) return undefined;
          }
          const answer = await this.shipper.send(
            records.map((r) => r.body),
            this.abort.signal,
          );
          last = answer;
          if (answer.unanswered) this.noteUnanswered(records.length, answer);
          if (answer.action === 'retry') throw new RetryableAnswer(answer);
          return answer;
        },
        {
          retries: this.options.maxRetries - 1,
          minTimeout: 0,
          signal: this.abort.signal,
          onFailedAttempt: async ({ retriesLeft, attemptNumber }) => {
            if (retriesLeft <= 0 || this.abort.signal.aborted) return;
            this.stats.retried++;
            const wait =
              last.retryAfter !== undefined
                ? Math.min(last.retryAfter, this.options.maxRetryDelay)
                : backoffDelay(attemptNumber - 1, this.options.retryDelay, this.options.maxRetryDelay);
            await sleep(wait, this.abort.signal);
          },
        },
      );
      return { result, records };
    } catch {
      return { result: last, records };
    }
  }
}
