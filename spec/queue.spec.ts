import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import sqlite3 from 'sqlite3';
import { RecordBatch } from '../lib/delivery/batch';
import { VectorQueueError } from '../lib/errors';
import { VectorTransport } from '../lib/index';
import { openQueue as openFile } from '../lib/queue/open';
import type { QueueOptions, QueuedRecord } from '../lib/queue/queue';
import { prepareDatabaseFile } from '../lib/queue/queue-file';
import { PARTS_PER_INSERT, SMALL_INSERT_PARTS, SMALL_INSERT_ROWS } from '../lib/queue/sql';
import { tempDir } from './support/helpers';

const opts = (over: Partial<QueueOptions> = {}): QueueOptions & { warnings: string[] } => {
  const warnings: string[] = [];
  return {
    leaseMs: 60_000,
    synchronous: 'normal',
    busyTimeout: 5000,
    maxQueueBytes: 256 * 1024 * 1024,
    overflow: 'drop-oldest',
    maxAge: undefined,
    maxDeadLetters: 10_000,
    onWarn: (m) => warnings.push(m),
    warnings,
    ...over,
  };
};

async function openQueue(file?: string, over: Partial<QueueOptions> = {}) {
  const path = file ?? join(tempDir(), 'q.db');
  prepareDatabaseFile(path);
  return { path, queue: await openFile(path, opts(over)) };
}

/** Claims every record of `queue` and asserts they are `texts`, with consecutive ids: in the order of logging. */
async function claimsInOrder(queue: { claim(limit: number): Promise<QueuedRecord[]> }, texts: readonly string[]): Promise<void> {
  const claimed = await queue.claim(texts.length + 1);
  assert.deepEqual(claimed.map((r) => r.body), texts);
  assert.deepEqual(claimed.map((r) => r.id), claimed.map((_, i) => claimed[0]!.id + i), 'ids follow the order of logging');
}

/** The SQLite types the bodies in the file at `path` have (each once), read with a connection of its own. */
async function bodyTypes(path: string): Promise<string[]> {
  const db = new sqlite3.Database(path);
  const types = await new Promise<string[]>((resolve, reject) =>
    db.all('SELECT DISTINCT typeof(body) AS t FROM records', (err, rows: Array<{ t: string }>) => (err ? reject(err) : resolve(rows.map((r) => r.t)))),
  );
  await new Promise<void>((resolve) => db.close(() => resolve()));
  return types;
}

const bodies = (from: number, n: number) => Array.from({ length: n }, (_, i) => `{"n":${from + i}}`);

describe('SqliteQueue', () => {
  it('claims the oldest records first, at most `limit`, and ack deletes them', async () => {
    const { queue } = await openQueue();
    await queue.append(bodies(0, 5));
    await queue.append(bodies(5, 5));
    const first = await queue.claim(4);
    assert.deepEqual(first.map((r) => r.body), bodies(0, 4));
    const second = await queue.claim(100);
    assert.deepEqual(second.map((r) => r.body), bodies(4, 6), 'leased records are not claimed twice');
    assert.equal(await queue.ack(first.map((r) => r.id)), 4);
    assert.equal(await queue.pendingCount(), 6);
    await queue.close();
  });

  it('appends that arrive during a commit are written together, in order', async () => {
    const { queue } = await openQueue();
    await Promise.all(Array.from({ length: 50 }, (_, i) => queue.append(bodies(i * 30, 30))));
    const all = await queue.claim(10_000);
    assert.deepEqual(all.map((r) => r.body), bodies(0, 1500));
    await queue.close();
  });

  it('a commit of more chunks than one INSERT takes is written whole, in order, as TEXT', async () => {
    const { queue, path } = await openQueue();
    // Each long row reserves more than a chunk (3 bytes a character), so it gets one of its own and
    // the short row after it a fresh one: twice as many chunks as pairs, several INSERTs in one
    // transaction.
    const pairs = Math.ceil(PARTS_PER_INSERT / 2) + 4;
    const texts = Array.from({ length: pairs }, (_, i) => [`{"short":${i},"t":"日本"}`, `{"long":"${String(i % 10).repeat(350_000)}"}`]).flat();
    await queue.append(RecordBatch.of(texts));
    await claimsInOrder(queue, texts);
    await queue.close();
    assert.deepEqual(await bodyTypes(path), ['text']);
  });

  it('ack, renew and release act on exactly the ids given, consecutive or not', async () => {
    const { queue } = await openQueue();
    await queue.append(bodies(0, 8));
    const claimed = (await queue.claim(8)).map((r) => r.id);
    const [a, b, c, d, e, f, g, h] = claimed as [number, number, number, number, number, number, number, number];
    assert.equal(await queue.ack([a, c, e]), 3, 'a list with gaps');
    assert.deepEqual(await queue.renew([b, c, d]), [b, d], 'only rows still held');
    await queue.release([g, f]);
    assert.equal(await queue.ack([f, g, h]), 1, 'a range: only the row still leased (h) goes');
    assert.deepEqual((await queue.claim(8)).map((r) => r.body), [bodies(0, 8)[5], bodies(0, 8)[6]], 'released rows come back, in order');
    assert.equal(await queue.pendingCount(), 4);
    await queue.close();
  });

  it('acks that arrive while one waits its turn join it: one DELETE, and each caller gets its own count', async () => {
    const { queue } = await openQueue();
    await queue.append(bodies(0, 12));
    const ids = (await queue.claim(10)).map((r) => r.id);
    await queue.release(ids.slice(6, 8)); // no longer held: an ack of these deletes nothing
    const deletes: string[] = [];
    queue.connection.observer = (sql) => {
      if (sql.startsWith('DELETE FROM records')) deletes.push(sql);
    };
    const busy = queue.append(bodies(12, 3)); // the first ack waits behind this commit
    const counts = await Promise.all([queue.ack(ids.slice(0, 3)), queue.ack(ids.slice(3, 6)), queue.ack(ids.slice(6, 8)), queue.ack(ids.slice(8, 10))]);
    await busy;
    assert.deepEqual(counts, [3, 3, 0, 2]);
    assert.equal(deletes.length, 1, deletes.join('\n'));
    const alone = await queue.ack(ids.slice(0, 1));
    assert.equal(alone, 0, 'an ack on its own still answers');
    assert.deepEqual((await queue.claim(100)).map((r) => r.body), [...bodies(6, 2), ...bodies(10, 5)]);
    await queue.close();
  });

  it("a commit of a few rows runs one INSERT of fixed text, kept; a larger commit's INSERT (its SQL names each row's offsets: new text each time) is not kept", async () => {
    const { queue } = await openQueue();
    const inserts: string[] = [];
    queue.connection.observer = (sql) => {
      if (sql.startsWith('INSERT INTO records (body, created_at, destination)')) inserts.push(sql);
    };
    for (let round = 0; round < 40; round++) {
      // Bodies of new lengths each round; every fifth commit is larger than a small one.
      const rows = round % 5 === 4 ? SMALL_INSERT_ROWS + 1 + round : 3 + (round % 5);
      const texts = Array.from({ length: rows }, (_, i) => `{"n":${round},"pad":"${'x'.repeat(round + i)}"}`);
      await queue.append(texts);
      const claimed = await queue.claim(1000);
      assert.deepEqual(claimed.map((r) => r.body), texts);
      await queue.ack(claimed.map((r) => r.id));
    }
    const small = [...new Set(inserts.filter((sql) => sql.includes('json_each')))];
    assert.equal(small.length, 1, 'the small commits share one text');
    assert.equal(inserts.filter((sql) => sql === small[0]).length, 32);
    assert.equal(new Set(inserts.filter((sql) => sql !== small[0])).size, 8, 'each larger commit has a text of its own');
    const kept = queue.connection.keptStatements();
    assert.deepEqual(kept.filter((sql) => sql.startsWith('INSERT INTO records (body, created_at, destination) SELECT')), small, 'only the fixed INSERT is kept');
    assert.ok(kept.some((sql) => sql.includes('UPDATE records SET lease_owner')), `the claim's statement is kept: ${kept.join('\n')}`);
    assert.equal((await queue.stats()).pending, 0);
    await queue.close();
  });

  it('a small commit of several hand-overs (chunk parts) is written whole, in order, as TEXT, with the fixed INSERT up to its parts and the other beyond', async () => {
    const { queue, path } = await openQueue();
    const used: boolean[] = [];
    queue.connection.observer = (sql) => {
      if (sql.startsWith('INSERT INTO records')) used.push(sql.includes('json_each'));
    };
    const all: string[] = [];
    for (const parts of [1, 3, SMALL_INSERT_PARTS, SMALL_INSERT_PARTS + 1]) {
      // Each RecordBatch.of writes a chunk of its own: a part of the commit.
      const batches = Array.from({ length: parts }, (_, p) => [`{"p":${p},"t":"日本 \\"q\\" ${parts}"}`, `{"p":${p},"e":"😀","n":${parts}}`]);
      await queue.append(RecordBatch.concat(batches.map((texts) => RecordBatch.of(texts))));
      all.push(...batches.flat());
    }
    assert.deepEqual(used, [true, true, true, false]);
    await claimsInOrder(queue, all);
    await queue.close();
    assert.deepEqual(await bodyTypes(path), ['text']);
  });

  it('the WAL stays within twice its budget: after many small commits, claims and acks (left to SQLite) and after a large commit (trimmed at once)', async () => {
    const { queue, path } = await openQueue();
    const budget = queue.walBudget;
    assert.equal(budget, 4 * 1024 * 1024, 'the default bound: a budget large enough to skip measuring small transactions');
    const walSize = () => statSync(`${path}-wal`).size;
    let most = 0;
    for (let i = 0; i < 1500; i++) {
      await queue.append(Array.from({ length: 5 }, (_, k) => `{"i":${i},"k":${k},"pad":"${'p'.repeat(200)}"}`));
      if (i % 20 === 19) await queue.ack((await queue.claim(100)).map((r) => r.id));
      most = Math.max(most, walSize());
    }
    assert.ok(most > budget / 2, `the small transactions wrote enough to need checkpoints (the WAL reached ${most} bytes)`);
    assert.ok(most <= 2 * budget, `the WAL reached ${most} bytes with a budget of ${budget}`);
    await queue.append(Array.from({ length: 3000 }, (_, k) => `{"k":${k},"pad":"${'q'.repeat(4000)}"}`));
    assert.ok(walSize() <= 2 * budget, `after a 12 MB commit the WAL holds ${walSize()} bytes`);
    await queue.close();
  });

  it('release puts records back in their place', async () => {
    const { queue } = await openQueue();
    await queue.append(bodies(0, 6));
    const a = await queue.claim(3);
    await queue.release(a.map((r) => r.id));
    assert.deepEqual((await queue.claim(6)).map((r) => r.body), bodies(0, 6));
    await queue.close();
  });

  it('two queues on one file never claim the same record, and one cannot ack the other\'s', async () => {
    const { path, queue: a } = await openQueue();
    const { queue: b } = await openQueue(path);
    await a.append(bodies(0, 10));
    const [ca, cb] = await Promise.all([a.claim(5), b.claim(5)]);
    const ids = [...ca, ...cb].map((r) => r.id);
    assert.equal(new Set(ids).size, 10);
    assert.equal(await b.ack(ca.map((r) => r.id)), 0, 'not b\'s lease');
    assert.equal(await a.ack(ca.map((r) => r.id)), 5);
    await a.close();
    await b.close();
  });

  it('an expired lease can be claimed by another queue; the old owner then cannot delete it', async () => {
    const { path, queue: a } = await openQueue(undefined, { leaseMs: 50 });
    const { queue: b } = await openQueue(path);
    await a.append(bodies(0, 3));
    const held = await a.claim(3);
    await new Promise((r) => setTimeout(r, 80));
    const taken = await b.claim(3);
    assert.deepEqual(taken.map((r) => r.id), held.map((r) => r.id));
    assert.equal(await a.ack(held.map((r) => r.id)), 0);
    assert.equal(await b.ack(taken.map((r) => r.id)), 3);
    await a.close();
    await b.close();
  });

  it('leases of a process that died are freed when the queue opens', async () => {
    const path = join(tempDir(), 'q.db');
    const dist = join(__dirname, '..', 'dist', 'queue');
    const script = `
      const { openQueue } = require(${JSON.stringify(join(dist, 'open.js'))});
      const { prepareDatabaseFile } = require(${JSON.stringify(join(dist, 'queue-file.js'))});
      (async () => {
        prepareDatabaseFile(${JSON.stringify(path)});
        const q = await openQueue(${JSON.stringify(path)}, { leaseMs: 600000, synchronous: 'normal', busyTimeout: 5000, maxQueueBytes: 1e8, overflow: 'drop-oldest', maxDeadLetters: 10, onWarn() {} });
        await q.append(['{"a":1}', '{"a":2}']);
        const c = await q.claim(10);
        process.stdout.write(String(c.length));
        process.kill(process.pid, 'SIGKILL');
      })();
    `;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(res.stdout, '2');
    assert.equal(res.signal, 'SIGKILL');
    const queue = await openFile(path, opts());
    assert.deepEqual((await queue.claim(10)).map((r) => r.body), ['{"a":1}', '{"a":2}']);
    await queue.close();
  });

  it('close() frees its leases so the next start ships them at once', async () => {
    const { path, queue } = await openQueue();
    await queue.append(bodies(0, 2));
    await queue.claim(2);
    await queue.close();
    const again = await openFile(path, opts());
    assert.equal((await again.claim(10)).length, 2);
    await again.close();
  });

  it('dead-letters records with the answer that rejected them', async () => {
    const { path, queue } = await openQueue();
    await queue.append(bodies(0, 3));
    const c = await queue.claim(3);
    assert.equal(await queue.deadLetter([c[1]!.id], 400, 'HTTP 400: bad'), 1);
    assert.deepEqual(await queue.stats().then((s) => [s.pending, s.deadLetters]), [2, 1]);
    await queue.close();
    const db = new sqlite3.Database(path);
    const rows = await new Promise<any[]>((res, rej) => db.all('SELECT body, status, reason FROM dead_letters', (e, r) => (e ? rej(e) : res(r))));
    db.close();
    assert.deepEqual(rows, [{ body: '{"n":1}', status: 400, reason: 'HTTP 400: bad' }]);
  });

  it('the file is private to the user (0600), a directory it creates is 0700', async () => {
    const dir = join(tempDir(), 'nested', 'logs');
    const { queue } = await openQueue(join(dir, 'q.db'));
    await queue.append(bodies(0, 1));
    assert.equal(statSync(join(dir, 'q.db')).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    for (const f of readdirSync(dir)) assert.equal(statSync(join(dir, f)).mode & 0o077, 0, `${f} is private`);
    await queue.close();
  });

  it('a dbPath that cannot be created fails with the path in the message', () => {
    const file = join(tempDir(), 'plain-file');
    writeFileSync(file, 'x');
    assert.throws(() => prepareDatabaseFile(join(file, 'q.db')), (err: Error) => {
      assert.ok(err instanceof VectorQueueError);
      assert.match(err.message, /`dbPath` ".*plain-file\/q\.db" cannot be used as the queue file \((ENOTDIR|EEXIST)\)/);
      return true;
    });
    assert.throws(
      () => new VectorTransport({ vectorUrl: 'http://127.0.0.1:9', project: 'p', table: 't', dbPath: join(file, 'q.db') }),
      /`dbPath` ".*plain-file\/q\.db" cannot be used/,
    );
  });

  it('a file that is not SQLite is refused at prepare, naming it, and left byte for byte', () => {
    const dir = tempDir();
    const path = join(dir, 'q.db');
    const text = 'this is not a database, just some text that is long enough to be read'.repeat(100);
    writeFileSync(path, text);
    assert.throws(() => prepareDatabaseFile(path), /q\.db" cannot be used as the queue file \(it is not a winston-vector queue; it was left as it is\)/);
    assert.equal(readFileSync(path, 'utf8'), text);
    assert.deepEqual(readdirSync(dir), ['q.db']);
  });

  describe('bounds', () => {
    const notice = (count: number, reason: string) => JSON.stringify({ notice: true, count, reason });
    const payload = (i: number) => JSON.stringify({ i, pad: 'x'.repeat(1000) });

    async function bounded(over: Partial<QueueOptions>) {
      const drops: Record<string, number> = {};
      const { queue } = await openQueue(undefined, {
        maxQueueBytes: 200 * 1024,
        notice,
        onDrop: (reason, n) => (drops[reason] = (drops[reason] ?? 0) + n),
        ...over,
      });
      return { queue, drops };
    }

    const split = (rows: QueuedRecord[]) => {
      const notices = rows.filter((r) => JSON.parse(r.body).notice).map((r) => JSON.parse(r.body));
      const records = rows.filter((r) => !JSON.parse(r.body).notice).map((r) => JSON.parse(r.body).i as number);
      return { notices, records };
    };

    it('drop-oldest keeps the newest records, counts every drop exactly and ships a notice', async () => {
      const { queue, drops } = await bounded({ overflow: 'drop-oldest' });
      for (let i = 0; i < 500; i += 10) await queue.append(Array.from({ length: 10 }, (_, k) => payload(i + k)));
      const { notices, records } = split(await queue.claim(10_000));
      const dropped = drops['queue-full']!;
      assert.ok(dropped > 0);
      assert.equal(records.length + dropped, 500, 'every record is kept or counted');
      assert.deepEqual(records, Array.from({ length: records.length }, (_, k) => 500 - records.length + k), 'the newest are kept, in order');
      assert.equal(notices.reduce((n, x) => n + x.count, 0), dropped, 'the notices tell the downstream exactly');
      const used = (await queue.stats()).queueBytes;
      assert.ok(used <= 200 * 1024, `${used} bytes on disk (file, WAL and shm)`);
      await queue.close();
    });

    it('drop-newest keeps the oldest records and drops what does not fit', async () => {
      const { queue, drops } = await bounded({ overflow: 'drop-newest' });
      for (let i = 0; i < 500; i += 10) await queue.append(Array.from({ length: 10 }, (_, k) => payload(i + k)));
      const claimed = await queue.claim(10_000);
      const { records, notices } = split(claimed);
      const dropped = drops['queue-full']!;
      assert.equal(records.length + dropped, 500);
      assert.deepEqual(records, Array.from({ length: records.length }, (_, k) => k));
      // Space comes back once records are delivered: the rest of the notices are written then.
      await queue.ack(claimed.map((r) => r.id));
      await queue.append([payload(1000)]);
      const after = split(await queue.claim(100));
      assert.equal([...notices, ...after.notices].reduce((n, x) => n + x.count, 0), dropped);
      assert.deepEqual(after.records, [1000]);
      await queue.close();
    });

    it('maxAge drops records older than the bound, counted, with a notice', async () => {
      let now = 1_000_000;
      const { queue, drops } = await bounded({ maxAge: 1000, now: () => now });
      await queue.append([payload(1), payload(2)]);
      now += 600;
      await queue.append([payload(3)]);
      now += 600;
      const { notices, records } = split(await queue.claim(100));
      assert.deepEqual(records, [3]);
      assert.equal(drops['max-age'], 2);
      assert.deepEqual(notices.map((n) => [n.count, n.reason]), [[2, 'max-age']]);
      await queue.close();
    });

    it('the dead-letter table keeps at most maxDeadLetters rows, the newest', async () => {
      const { queue, drops } = await bounded({ maxDeadLetters: 3 });
      await queue.append(bodies(0, 5));
      const c = await queue.claim(5);
      for (const r of c) await queue.deadLetter([r.id], 400, 'bad');
      assert.equal((await queue.stats()).deadLetters, 3);
      assert.equal(drops['dead-letter-overflow'], 2);
      await queue.close();
    });

    it('a full disk (SQLite page limit) never fails the write; drops are counted; it recovers', async () => {
      for (const overflow of ['drop-oldest', 'drop-newest'] as const) {
        const { queue, drops } = await bounded({ overflow, maxQueueBytes: 1024 * 1024 * 1024 });
        const conn = queue.connection;
        await queue.append([payload(0)]);
        await conn.exec('PRAGMA max_page_count = 40');
        let appended = 1;
        for (let i = 1; i < 400; i += 10) {
          await queue.append(Array.from({ length: 10 }, (_, k) => payload(i + k)));
          appended += 10;
        }
        const full = drops['disk-full'] ?? 0;
        assert.ok(full > 0, `${overflow}: some records were dropped`);
        await conn.exec('PRAGMA max_page_count = 1000000');
        await queue.append([payload(9999)]);
        const { records, notices } = split(await queue.claim(100_000));
        assert.equal(records.length + full + (drops['queue-full'] ?? 0), appended + 1, `${overflow}: exact`);
        assert.equal(records.at(-1), 9999, `${overflow}: writes work again`);
        assert.equal(notices.reduce((n, x) => n + x.count, 0), full);
        await queue.close();
      }
    });

    it('renew() reports only the records this queue still holds', async () => {
      const { path, queue: a } = await openQueue(undefined, { leaseMs: 50 });
      const { queue: b } = await openQueue(path);
      await a.append(bodies(0, 4));
      const mine = await a.claim(4);
      assert.deepEqual(await a.renew(mine.map((r) => r.id)), mine.map((r) => r.id));
      await new Promise((r) => setTimeout(r, 80));
      await b.claim(2);
      assert.deepEqual(await a.renew(mine.map((r) => r.id)), mine.slice(2).map((r) => r.id));
      await a.close();
      await b.close();
    });
  });
});
