/**
 * Model-based property test of the SQLite queue: random append / claim / ack / fail / dead-letter /
 * expire / restart / overflow sequences, by two queues on one file, against an in-memory model.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { openQueue } from '../lib/queue/open';
import type { DropReason, QueueOptions, SqliteQueue } from '../lib/queue/queue';
import { prepareDatabaseFile } from '../lib/queue/queue-file';
import { tempDir } from './support/helpers';

const SOAK = process.env.WV_SOAK === '1';
const LEASE = 1000;
const MAX_AGE = 5000;
type Owner = 'A' | 'B';

interface Row {
  body: string;
  createdAt: number;
  owner: Owner | null;
  leaseUntil: number;
}

class Model {
  rows: Row[] = [];
  now = 1_000_000;
  next = 0;
}

class Real {
  queues = {} as Record<Owner, SqliteQueue>;
  ids = new Map<string, number>();
  drops: Array<[DropReason, number]> = [];
  constructor(
    readonly file: string,
    readonly model: Model,
  ) {}
  options(): QueueOptions {
    return {
      leaseMs: LEASE,
      synchronous: 'normal',
      busyTimeout: 5000,
      maxQueueBytes: 96 * 1024,
      overflow: 'drop-oldest',
      maxAge: MAX_AGE,
      maxDeadLetters: 1000,
      onWarn: () => undefined,
      onDrop: (reason, n) => this.drops.push([reason, n]),
      now: () => this.model.now,
    };
  }
  async open(owner: Owner) {
    this.queues[owner] = await openQueue(this.file, this.options());
  }
}

type Cmd = fc.AsyncCommand<Model, Real>;

/** Leases a model row can be claimed under: free, or expired. */
const claimable = (m: Model, r: Row) => r.leaseUntil < m.now;

async function check(m: Model, r: Real) {
  assert.equal(await r.queues.A.pendingCount(), m.rows.length, 'pending count matches the model');
}

class Append implements Cmd {
  constructor(readonly n: number, readonly size: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const bodies = Array.from({ length: this.n }, () => JSON.stringify({ n: m.next++, pad: 'x'.repeat(this.size) }));
    r.drops = [];
    await r.queues.A.append(bodies);
    const rows = bodies.map((body) => ({ body, createdAt: m.now, owner: null, leaseUntil: 0 }) as Row);
    // drop-oldest: the oldest records go first, but never one under a lease (it is in a request,
    // which decides its fate), then (a burst larger than the bound) the oldest of the burst.
    let dropped = r.drops.filter(([reason]) => reason === 'queue-full').reduce((n, [, c]) => n + c, 0);
    const free = m.rows.filter((row) => claimable(m, row));
    const fromQueue = Math.min(dropped, free.length);
    const gone = new Set(free.slice(0, fromQueue));
    m.rows = m.rows.filter((row) => !gone.has(row));
    dropped -= fromQueue;
    m.rows.push(...rows.slice(dropped));
    await check(m, r);
  }
  toString = () => `append(${this.n}×${this.size})`;
}

class Claim implements Cmd {
  constructor(readonly owner: Owner, readonly k: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    r.drops = [];
    const got = await r.queues[this.owner].claim(this.k);
    // maxAge first: records too old, and not leased, are dropped, oldest first.
    const expired = r.drops.filter(([reason]) => reason === 'max-age').reduce((n, [, c]) => n + c, 0);
    const before = m.rows.length;
    m.rows = m.rows.filter((row) => !(row.createdAt < m.now - MAX_AGE && row.leaseUntil < m.now));
    assert.equal(before - m.rows.length, expired, 'max-age drops match the model');
    const expected = m.rows.filter((row) => claimable(m, row)).slice(0, this.k);
    assert.deepEqual(got.map((g) => g.body), expected.map((e) => e.body), 'claim takes the oldest claimable records');
    for (const row of expected) {
      row.owner = this.owner;
      row.leaseUntil = m.now + LEASE;
    }
    for (const g of got) r.ids.set(g.body, g.id);
    await check(m, r);
  }
  toString = () => `claim(${this.owner}, ${this.k})`;
}

/** Acks (or dead-letters, or releases) some records `owner` believes it holds, stolen ones included. */
class Settle implements Cmd {
  constructor(readonly owner: Owner, readonly how: 'ack' | 'release' | 'dead', readonly pick: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const mine = m.rows.filter((row) => row.owner === this.owner || (row.owner !== null && this.pick % 2 === 0));
    const chosen = mine.slice(0, this.pick);
    const ids = chosen.map((row) => r.ids.get(row.body)!).filter((id) => id !== undefined);
    const held = chosen.filter((row) => row.owner === this.owner && r.ids.has(row.body));
    const q = r.queues[this.owner];
    if (this.how === 'ack') assert.equal(await q.ack(ids), held.length, 'ack deletes only what this owner holds');
    if (this.how === 'dead') assert.equal(await q.deadLetter(ids, 400, 'model'), held.length);
    if (this.how === 'release') await q.release(ids);
    if (this.how === 'release') {
      for (const row of held) {
        row.owner = null;
        row.leaseUntil = 0;
      }
    } else {
      m.rows = m.rows.filter((row) => !held.includes(row));
    }
    await check(m, r);
  }
  toString = () => `${this.how}(${this.owner}, ${this.pick})`;
}

class Advance implements Cmd {
  constructor(readonly ms: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    m.now += this.ms;
    await check(m, r);
  }
  toString = () => `advance(${this.ms})`;
}

class Restart implements Cmd {
  constructor(readonly owner: Owner) {}
  check = () => true;
  async run(m: Model, r: Real) {
    await r.queues[this.owner].close();
    for (const row of m.rows) {
      if (row.owner === this.owner) {
        row.owner = null;
        row.leaseUntil = 0;
      }
    }
    await r.open(this.owner);
    await check(m, r);
  }
  toString = () => `restart(${this.owner})`;
}

describe('SqliteQueue against a model', () => {
  it('random sequences keep the queue and the model equal', async () => {
    const owner = fc.constantFrom<Owner>('A', 'B');
    const commands = [
      fc.tuple(fc.integer({ min: 1, max: 40 }), fc.constantFrom(10, 200, 3000)).map(([n, size]) => new Append(n, size)),
      fc.tuple(owner, fc.integer({ min: 1, max: 30 })).map(([o, k]) => new Claim(o, k)),
      fc.tuple(owner, fc.constantFrom('ack', 'release', 'dead') as fc.Arbitrary<'ack' | 'release' | 'dead'>, fc.integer({ min: 1, max: 20 })).map(
        ([o, how, k]) => new Settle(o, how, k),
      ),
      fc.constantFrom(100, 600, 1500, 6000).map((ms) => new Advance(ms)),
      owner.map((o) => new Restart(o)),
    ];
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: SOAK ? 300 : 60, size: 'large' }), async (cmds) => {
        const file = join(tempDir(), 'model.db');
        prepareDatabaseFile(file);
        const model = new Model();
        const real = new Real(file, model);
        await real.open('A');
        await real.open('B');
        try {
          await fc.asyncModelRun(() => ({ model, real }), cmds);
        } finally {
          await real.queues.A.close();
          await real.queues.B.close();
        }
      }),
      { numRuns: SOAK ? 500 : 60 },
    );
  });
});
