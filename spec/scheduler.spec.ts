/** Pure scheduling logic: an in-memory queue, a scripted shipper, and fake timers. */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import type { VectorDeliveryError } from '../lib/errors';
import type { Queue, QueuedRecord } from '../lib/queue/queue';
import { Scheduler, type SchedulerOptions } from '../lib/delivery/scheduler';
import type { ShipResult, Shipper } from '../lib/delivery/shipper';

class MemoryQueue implements Queue {
  rows: Array<QueuedRecord & { leased: boolean }> = [];
  private next = 1;
  async append(bodies: string[]) {
    for (const body of bodies) this.rows.push({ id: this.next++, body, leased: false });
  }
  async claim(limit: number) {
    const free = this.rows.filter((r) => !r.leased).slice(0, limit);
    for (const r of free) r.leased = true;
    return free.map(({ id, body }) => ({ id, body }));
  }
  async ack(ids: readonly number[]) {
    const before = this.rows.length;
    this.rows = this.rows.filter((r) => !ids.includes(r.id));
    return before - this.rows.length;
  }
  async renew(ids: readonly number[]) {
    return this.rows.filter((r) => r.leased && ids.includes(r.id)).map((r) => r.id);
  }
  async release(ids: readonly number[]) {
    for (const r of this.rows) if (ids.includes(r.id)) r.leased = false;
  }
  dead: number[] = [];
  async deadLetter(ids: readonly number[]) {
    this.dead.push(...ids);
    return this.ack(ids);
  }
  async maxId() {
    return this.rows.at(-1)?.id ?? 0;
  }
}

class ScriptedShipper implements Shipper {
  calls: string[][] = [];
  inFlight = 0;
  maxInFlight = 0;
  answers: ShipResult[] = [];
  gate: Promise<void> | undefined;
  async send(bodies: readonly string[]): Promise<ShipResult> {
    this.calls.push([...bodies]);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.gate) await this.gate;
      return this.answers.shift() ?? { action: 'delivered', status: 200 };
    } finally {
      this.inFlight--;
    }
  }
  close() {}
}

/** Runs `hook(limit)` before every claim of `queue`: to record it, or to throw and fail the claim. */
function beforeClaim(queue: MemoryQueue, hook: (limit: number) => void): void {
  const claim = queue.claim.bind(queue);
  queue.claim = async (limit: number) => {
    hook(limit);
    return claim(limit);
  };
}

const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

const ok = { action: 'delivered', status: 200 } as const;
const busy = { action: 'retry', status: 503, detail: 'HTTP 503' } as const;

const options = { batchSize: 3, flushInterval: 1000, maxRetries: 2, retryDelay: 100, maxRetryDelay: 5000, leaseTimeout: 60_000, claimRows: 12 };

describe('Scheduler', () => {
  let queue: MemoryQueue;
  let shipper: ScriptedShipper;
  let warnings: VectorDeliveryError[];
  let scheduler: Scheduler;

  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
    // Jitter in the middle of its range: a wait of 0 would skip its timer, and a test stepping the
    // clock would see more happen than it meant to (seen once in a loaded full run).
    mock.method(Math, 'random', () => 0.5);
    queue = new MemoryQueue();
    shipper = new ScriptedShipper();
    warnings = [];
    scheduler = new Scheduler(queue, shipper, options, (w) => warnings.push(w));
  });
  afterEach(async () => {
    mock.timers.reset();
    mock.restoreAll();
    await scheduler.close(0);
  });

  /** The claims (`claim <limit>`) and sends (`send <first record>`) from now on, in order. */
  function claimsAndSends(): string[] {
    const events: string[] = [];
    beforeClaim(queue, (limit) => events.push(`claim ${limit}`));
    const send = shipper.send.bind(shipper);
    shipper.send = (bodies: readonly string[]) => {
      events.push(`send ${bodies[0]}`);
      return send(bodies);
    };
    return events;
  }

  /** Queues records `r0`… `r<n-1>`, starts the scheduler and runs its first round, through one retry wait. */
  async function startWith(n: number): Promise<string[]> {
    const all = Array.from({ length: n }, (_, i) => `r${i}`);
    await queue.append(all);
    scheduler.start();
    await settle();
    mock.timers.tick(100);
    await settle();
    return all;
  }

  /** Closes the scheduler and puts one on `queue` in its place, with `options` changed by `over`. */
  async function replaceScheduler(over: Partial<SchedulerOptions>): Promise<void> {
    await scheduler.close(0);
    scheduler = new Scheduler(queue, shipper, { ...options, ...over }, (w) => warnings.push(w));
  }

  it('ships when batchSize records are pending, not before', async () => {
    scheduler.start();
    await settle();
    await queue.append(['a', 'b']);
    scheduler.notify(2);
    await settle();
    assert.equal(shipper.calls.length, 0);
    await queue.append(['c']);
    scheduler.notify(1);
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c']]);
  });

  it('a round that committed records started ships whole batches only: the rest waits for flushInterval', async () => {
    scheduler.start();
    await settle();
    await queue.append(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
    scheduler.notify(7);
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c'], ['d', 'e', 'f']]);
    mock.timers.tick(1000);
    await settle();
    assert.deepEqual(shipper.calls.at(-1), ['g'], 'the interval ships a partial batch');
  });

  it('a record committed before the claim does not go as a batch of its own: it waits for a whole batch, or for flush()', async () => {
    scheduler.start();
    await settle();
    await queue.append(['a', 'b', 'c']);
    await queue.append(['d']); // its commit ends before the round's claim runs
    scheduler.notify(3);
    scheduler.notify(1);
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c']]);
    await queue.append(['e', 'f']);
    scheduler.notify(2);
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c'], ['d', 'e', 'f']], 'a whole batch again');
    await queue.append(['g']);
    scheduler.notify(1);
    await scheduler.flush();
    assert.deepEqual(shipper.calls.at(-1), ['g'], 'flush() ships a partial batch');
  });

  it('a count of committed records that overstates the queue (another process shipped some) is corrected by the short claim', async () => {
    scheduler.start();
    await settle();
    await queue.append(['a', 'b', 'c']);
    scheduler.notify(6); // three of them were taken by another process sharing the file
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c']]);
    await queue.append(['d', 'e']);
    scheduler.notify(2);
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c']], 'two records are not a batch');
    await queue.append(['f']);
    scheduler.notify(1);
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c'], ['d', 'e', 'f']]);
  });

  it('ships what is pending every flushInterval', async () => {
    scheduler.start();
    await queue.append(['a']);
    scheduler.notify(1);
    await settle();
    assert.equal(shipper.calls.length, 0);
    mock.timers.tick(1000);
    await settle();
    assert.deepEqual(shipper.calls, [['a']]);
  });

  it('while the logger commits a burst, requests wait until it is committed and 20 ms pass with no commit of its size, at most a second from the claim', async () => {
    let burst = true;
    await replaceScheduler({ burst: () => burst });
    await queue.append(['a', 'b', 'c', 'd', 'e', 'f']);
    scheduler.start();
    await settle();
    mock.timers.tick(500);
    scheduler.notify(0, true); // a commit ended, the burst goes on
    await settle();
    assert.equal(shipper.calls.length, 0, 'held while the burst is committed');
    burst = false;
    scheduler.notify(0, true); // the commit that ends the burst, or only this turn's part of it
    await settle();
    assert.equal(shipper.calls.length, 0, "held for the burst's next commit, a few ms away");
    mock.timers.tick(15);
    scheduler.notify(0, true); // there was one: 20 ms more are waited from the end of this wait
    await settle();
    mock.timers.tick(5);
    await settle();
    mock.timers.tick(5);
    scheduler.notify(1); // a small commit does not count
    await settle();
    mock.timers.tick(5);
    await settle();
    assert.equal(shipper.calls.length, 0, 'still held');
    mock.timers.tick(10);
    await settle();
    assert.deepEqual(shipper.calls, [['a', 'b', 'c'], ['d', 'e', 'f']], 'no commit of its size for 20 ms: the burst is over');

    burst = true;
    await queue.append(['g', 'h', 'i']);
    scheduler.notify(3);
    await settle();
    mock.timers.tick(999);
    await settle();
    assert.equal(shipper.calls.length, 2, 'still held');
    mock.timers.tick(1);
    await settle();
    assert.deepEqual(shipper.calls[2], ['g', 'h', 'i'], 'a burst that goes on holds a window at most a second');
  });

  it('flush() and close() do not wait for a burst, and let a held request go', async () => {
    await replaceScheduler({ burst: () => true });
    scheduler.start();
    await settle();
    await queue.append(['a', 'b']);
    await scheduler.flush();
    assert.deepEqual(shipper.calls, [['a', 'b']]);
    await queue.append(['c', 'd', 'e']);
    scheduler.notify(3);
    await settle();
    assert.equal(shipper.calls.length, 1, 'held for the burst');
    await scheduler.flush();
    assert.deepEqual(shipper.calls, [['a', 'b'], ['c', 'd', 'e']]);
    await queue.append(['f', 'g', 'h']);
    scheduler.notify(3);
    await settle();
    assert.equal(shipper.calls.length, 2, 'held for the burst');
    await scheduler.close(5000);
    assert.deepEqual(shipper.calls, [['a', 'b'], ['c', 'd', 'e'], ['f', 'g', 'h']]);
  });

  it('flush() while a round is failing gets a round of its own: the receiver may be back', async () => {
    await replaceScheduler({ maxRetries: 1 });
    let open!: () => void;
    shipper.gate = new Promise((r) => (open = r));
    shipper.answers = [busy]; // the request in flight when flush() is called fails; the next goes in
    await queue.append(['a', 'b', 'c']);
    scheduler.start();
    await settle();
    assert.equal(shipper.calls.length, 1);
    let flushed = false;
    const flush = scheduler.flush().then(() => (flushed = true));
    await settle();
    open();
    await flush;
    assert.equal(flushed, true);
    assert.deepEqual(shipper.calls, [['a', 'b', 'c'], ['a', 'b', 'c']], 'a second round, at once, in no backoff');
    assert.equal(queue.rows.length, 0, 'flush() answers after its own round');
  });

  it('flush() while a round is failing answers after its own round fails too, not later', async () => {
    await replaceScheduler({ maxRetries: 1 });
    let open!: () => void;
    shipper.gate = new Promise((r) => (open = r));
    shipper.answers = [busy, busy];
    await queue.append(['a', 'b', 'c']);
    scheduler.start();
    await settle();
    const flush = scheduler.flush();
    await settle();
    open();
    await flush;
    assert.equal(shipper.calls.length, 2);
    assert.equal(queue.rows.length, 3);
    await settle();
    assert.equal(shipper.calls.length, 2, 'then the backoff holds: no round a flush() does not ask for');
  });

  it('one request in flight; a backlog drains batch after batch without waiting for the interval', async () => {
    let open!: () => void;
    shipper.gate = new Promise((r) => (open = r));
    await queue.append(['1', '2', '3', '4', '5', '6', '7']);
    scheduler.start();
    for (let i = 0; i < 5; i++) scheduler.notify(3);
    await settle();
    assert.equal(shipper.calls.length, 1);
    open();
    await settle();
    assert.deepEqual(shipper.calls, [['1', '2', '3'], ['4', '5', '6'], ['7']]);
    assert.equal(shipper.maxInFlight, 1);
    assert.equal(queue.rows.length, 0);
  });

  it('claims a few batches at once; a failure mid-window gives all of them back, and order is kept', async () => {
    const claims: number[] = [];
    beforeClaim(queue, (limit) => claims.push(limit));
    shipper.answers = [
      { action: 'delivered', status: 200 },
      { action: 'retry', status: 503, detail: 'HTTP 503' },
      { action: 'retry', status: 503, detail: 'HTTP 503' },
    ];
    const all = await startWith(14);
    assert.deepEqual(claims.slice(0, 2), [3, 12], 'one batch while the records\' length is unknown, then four batches of 3 at once');
    assert.equal(queue.rows.length, 11, 'the first batch was delivered');
    assert.ok(queue.rows.every((r) => !r.leased), 'the failed batch and the rest of the window went back');
    mock.timers.tick(5000);
    await settle();
    assert.equal(queue.rows.length, 0);
    const delivered = [shipper.calls[0]!, ...shipper.calls.slice(3)].flat();
    assert.deepEqual(delivered, all, 'every record delivered once, in order');
  });

  it('claims the next window while the current one ships; a failure gives that claim back too', async () => {
    const events = claimsAndSends();
    // One batch first (the records' length is not known yet), then windows of four batches of 3.
    // The fourth batch fails on both attempts.
    shipper.answers = [ok, ok, ok, busy, busy];
    const all = await startWith(30);
    assert.deepEqual(
      events.slice(0, 6),
      ['claim 3', 'claim 12', 'send r0', 'claim 12', 'send r3', 'send r6'],
      'each next window is claimed before the current one starts to go out',
    );
    assert.equal(queue.rows.length, 21, 'three batches delivered');
    assert.ok(queue.rows.every((r) => !r.leased), 'the failed batch and the window claimed ahead went back');
    mock.timers.tick(5000);
    await settle();
    assert.equal(queue.rows.length, 0);
    const delivered = [...shipper.calls.slice(0, 3), ...shipper.calls.slice(5)].flat();
    assert.deepEqual(delivered, all, 'every record delivered once, in order');
  });

  it('after a failed round the next claims one batch (a probe), and whole windows again once it goes through', async () => {
    const events = claimsAndSends();
    // Round 1: r0 goes, r3 fails twice. Round 2: the probe fails twice. Round 3: the probe goes.
    shipper.answers = [ok, busy, busy, busy, busy];
    const all = await startWith(30);
    assert.deepEqual(events, ['claim 3', 'claim 12', 'send r0', 'claim 12', 'send r3', 'send r3']);
    events.length = 0;
    mock.timers.tick(5000);
    await settle();
    mock.timers.tick(100);
    await settle();
    assert.deepEqual(events, ['claim 3', 'send r3', 'send r3'], 'a round while the receiver is down reads one batch');
    assert.ok(queue.rows.every((r) => !r.leased));
    events.length = 0;
    mock.timers.tick(5000);
    await settle();
    assert.deepEqual(events.slice(0, 5), ['claim 3', 'send r3', 'claim 12', 'claim 12', 'send r6'], 'after the probe, windows and claims ahead');
    assert.equal(queue.rows.length, 0);
    const delivered = [shipper.calls[0]!, ...shipper.calls.slice(5)].flat();
    assert.deepEqual(delivered, all, 'every record delivered once, in order');
  });

  it('a claim ahead that fails ends the round after the current window, with a warning; nothing is lost', async () => {
    let calls = 0;
    beforeClaim(queue, () => {
      if (++calls === 2) throw new Error('disk I/O error');
    });
    const all = Array.from({ length: 30 }, (_, i) => `r${i}`);
    await queue.append(all);
    scheduler.start();
    await settle();
    assert.equal(queue.rows.length, 27, 'the window claimed before the failure was delivered');
    assert.ok(queue.rows.every((r) => !r.leased));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!.message, /queue error: disk I\/O error/);
    mock.timers.tick(5000);
    await settle();
    assert.equal(queue.rows.length, 0);
    assert.deepEqual(shipper.calls.flat(), all, 'every record delivered once, in order');
  });

  it('leases a round could not give back (the disk was full) are given back before the next claim, not left to expire', async () => {
    const release = queue.release.bind(queue);
    let failures = 1;
    queue.release = async (ids: readonly number[]) => {
      if (failures-- > 0) throw Object.assign(new Error('SQLITE_FULL: database or disk is full'), { code: 'SQLITE_FULL' });
      return release(ids);
    };
    shipper.answers = [busy, busy];
    const all = await startWith(6);
    assert.equal(shipper.calls.length, 2, 'the first batch failed twice');
    assert.ok(queue.rows.some((r) => r.leased), 'the release failed: records are still leased');
    assert.ok(warnings.some((w) => /queue error: SQLITE_FULL/.test(w.message)), 'the failed release is warned about');
    mock.timers.tick(5000);
    await settle();
    assert.equal(queue.rows.length, 0, 'given back, claimed again and delivered (a lease here never expires by itself)');
    assert.deepEqual(shipper.calls.slice(2).flat(), all, 'every record delivered, in order');
  });

  it('claims ~1000 rows at a time by default, in whole batches, at least one; fewer when records are long', async () => {
    const long = 'x'.repeat(100_000); // 8 MiB of text holds 83 of these
    const cases = [
      [100, 'short', 1000],
      [300, 'short', 900],
      [5000, 'short', 5000],
      [10, long, 80],
      [100, long, 100],
    ] as const;
    for (const [batchSize, text, expected] of cases) {
      queue = new MemoryQueue();
      const limits: number[] = [];
      beforeClaim(queue, (limit) => limits.push(limit));
      await queue.append(Array.from({ length: 2 * expected + batchSize }, (_, i) => `${text}${i}`));
      await replaceScheduler({ claimRows: undefined, batchSize }); // the default window
      scheduler.start();
      await settle();
      assert.equal(limits[0], batchSize, `batchSize ${batchSize}: one batch until the records' length is known`);
      assert.equal(limits[1], expected, `batchSize ${batchSize}, ${text === long ? 'long' : 'short'} records`);
    }
  });

  it('claimChars (the queue gives its WAL budget) bounds a window of long records, still at least one batch', async () => {
    const text = 'x'.repeat(1000); // 64 KiB of text holds 65 of these
    for (const [batchSize, expected] of [[10, 60], [100, 100]] as const) {
      queue = new MemoryQueue();
      const limits: number[] = [];
      beforeClaim(queue, (limit) => limits.push(limit));
      await queue.append(Array.from({ length: 2 * expected + batchSize }, (_, i) => `${text}${i}`));
      await replaceScheduler({ claimRows: undefined, claimChars: 64 * 1024, batchSize });
      scheduler.start();
      await settle();
      assert.equal(limits[1], expected, `batchSize ${batchSize}: whole batches within 64 KiB, at least one`);
    }
  });

  it('a batch sent more than half a lease after its claim renews the lease first', async () => {
    await replaceScheduler({ batchSize: 1, leaseTimeout: 1000 });
    const renewed: number[][] = [];
    const renew = queue.renew.bind(queue);
    queue.renew = (ids: readonly number[]) => {
      renewed.push([...ids]);
      return renew(ids);
    };
    let open!: () => void;
    shipper.gate = new Promise((r) => (open = r));
    await queue.append(['a', 'b', 'c']);
    scheduler.start();
    await settle();
    assert.equal(shipper.calls.length, 1);
    mock.timers.tick(600); // the first request hangs past half the lease of the window it came from
    open();
    await settle();
    assert.deepEqual(shipper.calls, [['a'], ['b'], ['c']]);
    assert.deepEqual(renewed, [[2], [3]], 'each later batch of the old claim was renewed before it went out');
  });

  it('a failed round keeps the records and backs off within the cap; triggers during backoff wait', async () => {
    shipper.answers = [
      { action: 'retry', status: 503, detail: 'HTTP 503' },
      { action: 'retry', status: 503, detail: 'HTTP 503' },
    ];
    await queue.append(['a', 'b', 'c']);
    scheduler.start();
    await settle();
    // Attempt 2 waits inside the round (jittered, ≤ retryDelay).
    mock.timers.tick(100);
    await settle();
    assert.equal(shipper.calls.length, 2);
    assert.equal(queue.rows.length, 3);
    assert.ok(queue.rows.every((r) => !r.leased), 'released for the next round');
    assert.equal(warnings.length, 1);
    scheduler.notify(3);
    await settle();
    assert.equal(shipper.calls.length, 2, 'no new round during backoff');
    mock.timers.tick(5000);
    await settle();
    assert.equal(shipper.calls.length, 3);
    assert.equal(queue.rows.length, 0);
  });

  it('Retry-After sets the wait between attempts', async () => {
    shipper.answers = [{ action: 'retry', status: 429, retryAfter: 2000, detail: 'HTTP 429' }];
    await queue.append(['a']);
    scheduler.start();
    await settle();
    mock.timers.tick(1999);
    await settle();
    assert.equal(shipper.calls.length, 1);
    mock.timers.tick(1);
    await settle();
    assert.equal(shipper.calls.length, 2);
    assert.equal(queue.rows.length, 0);
  });

  it('a blocked answer waits exactly maxRetryDelay, and warns once while it lasts', async () => {
    for (let i = 0; i < 3; i++) shipper.answers.push({ action: 'blocked', status: 401, detail: 'HTTP 401' });
    await queue.append(['a']);
    scheduler.start();
    await settle();
    assert.equal(shipper.calls.length, 1, 'blocked is not retried inside the round');
    mock.timers.tick(4999);
    await settle();
    assert.equal(shipper.calls.length, 1);
    mock.timers.tick(1);
    await settle();
    assert.equal(shipper.calls.length, 2);
    mock.timers.tick(5000);
    await settle();
    assert.equal(shipper.calls.length, 3);
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]!.status, 401);
  });

  it('bisects a rejected batch down to the record that stays rejected', async () => {
    shipper.send = async function (bodies) {
      this.calls.push([...bodies]);
      return bodies.includes('bad') ? { action: 'rejected', status: 400, detail: 'HTTP 400' } : { action: 'delivered', status: 200 };
    };
    await queue.append(['a', 'bad', 'c']);
    scheduler.start();
    await settle();
    assert.deepEqual(queue.dead, [2]);
    assert.equal(queue.rows.length, 0);
    assert.equal(scheduler.stats.delivered, 2);
    assert.equal(scheduler.stats.deadLettered, 1);
  });
});
