/**
 * The queue file on disk: files that are not ours are never touched, symlinks are refused, a
 * 0-byte file is an empty queue, a directory others can write gets a warning, and a file that is
 * busy at open is retried, never final. Real files in temp dirs, a real second SQLite connection.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import sqlite3 from 'sqlite3';
import winston from 'winston';
import { VectorTransport } from '../lib/index';
import { APPLICATION_ID, SCHEMA_VERSION } from '../lib/queue/queue-file';
import { receiver, sleep, tempDir, transport, until } from './support/helpers';

const bin = join(__dirname, '..', 'dist', 'tools', 'cli.js');

function exec(db: sqlite3.Database, sql: string): Promise<void> {
  return new Promise((resolve, reject) => db.exec(sql, (err) => (err ? reject(err) : resolve())));
}

async function sqliteFile(path: string, sql: string): Promise<void> {
  const db = new sqlite3.Database(path);
  await exec(db, sql);
  await new Promise<void>((resolve) => db.close(() => resolve()));
}

const build = (dbPath: string) => () => new VectorTransport({ vectorUrl: 'http://127.0.0.1:9/', project: 'p', table: 't', dbPath });

describe('files that are not ours are never touched', () => {
  it('a JSON config, or a SQLite file of another application id: refused at construction, naming the path, left byte for byte', async () => {
    const dir = tempDir();
    const config = join(dir, 'config.json');
    writeFileSync(config, '{"port": 8080}\n');
    chmodSync(config, 0o644);
    assert.throws(build(config), /config\.json" cannot be used as the queue file \(it is not a winston-vector queue; it was left as it is\)/);
    assert.equal(readFileSync(config, 'utf8'), '{"port": 8080}\n');
    assert.equal(statSync(config).mode & 0o777, 0o644, 'not chmod-ed');
    const other = join(dir, 'other.sqlite');
    await sqliteFile(other, 'PRAGMA application_id = 42; CREATE TABLE t (x);');
    const before = readFileSync(other);
    assert.throws(build(other), /other\.sqlite" cannot be used/);
    assert.deepEqual(readFileSync(other), before);
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'other.sqlite']);
  });

  it("an app's own SQLite database (no application id, its own tables): an 'error' naming it, no table added, nothing renamed", async () => {
    const dir = tempDir();
    const app = join(dir, 'app.db');
    await sqliteFile(app, 'CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES (\'ann\');');
    const before = readFileSync(app);
    const t = transport('http://127.0.0.1:9/', { dbPath: app });
    await until(() => t.errors.length > 0, 10_000, "the 'error'");
    assert.match(t.errors[0]!.message, /app\.db.*another application, not a winston-vector queue; it was left as it is/);
    winston.createLogger({ transports: [t] }).info('goes nowhere');
    await t.close();
    assert.deepEqual(readFileSync(app), before, 'byte for byte');
    assert.deepEqual(readdirSync(dir), ['app.db']);
  });

  it('a symlinked dbPath is refused; its target is not written or chmod-ed', () => {
    const dir = tempDir();
    const target = join(dir, 'target.db');
    writeFileSync(target, '');
    chmodSync(target, 0o644);
    const link = join(dir, 'link.db');
    symlinkSync(target, link);
    assert.throws(build(link), /link\.db" cannot be used as the queue file \(it is a symbolic link/);
    assert.equal(statSync(target).size, 0);
    assert.equal(statSync(target).mode & 0o777, 0o644);
  });

  it('a 0-byte file (a process died before the schema) is an empty queue: for the transport and the CLI', async () => {
    const dbPath = join(tempDir(), 'q.db');
    writeFileSync(dbPath, '');
    const status = spawnSync(process.execPath, [bin, 'status', '--db', dbPath, '--json'], { encoding: 'utf8' });
    assert.equal(status.status, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).pending, 0);
    const r = await receiver();
    const t = transport(r.url, { dbPath });
    winston.createLogger({ transports: [t] }).info('into the empty file');
    assert.deepEqual(await t.flush(), { delivered: 1, pending: 0 });
    assert.deepEqual(t.errors, []);
  });

  it('a directory other users can write to gets a warning', async () => {
    const dir = tempDir();
    chmodSync(dir, 0o777);
    const t = transport('http://127.0.0.1:9/', { dbPath: join(dir, 'q.db') });
    await until(() => t.warnings.length > 0, 5000, 'the warning');
    assert.match(t.warnings[0]!.message, /can be written by other users \(mode 777\)/);
  });
});

describe('open failures are never final', () => {
  it('a new file another connection is still setting up (its write lock held, not yet in WAL mode): SQLite refuses the switch to WAL at once, not after its busy timeout; the open tries again and gets through, with no warning', async () => {
    const dbPath = join(tempDir(), 'q.db');
    // What a second transport creating the same new file meanwhile leaves: marked as a queue, still
    // in rollback mode, its write lock held while it writes.
    const holder = new sqlite3.Database(dbPath);
    await exec(holder, `PRAGMA application_id = ${APPLICATION_ID}; PRAGMA user_version = ${SCHEMA_VERSION}; BEGIN IMMEDIATE;`);
    const r = await receiver();
    const t = transport(r.url, { dbPath });
    const logger = winston.createLogger({ transports: [t] });
    for (let i = 0; i < 20; i++) logger.info(`m${i}`);
    await sleep(300);
    await exec(holder, 'COMMIT;');
    await new Promise<void>((resolve) => holder.close(() => resolve()));
    await t.committed();
    assert.deepEqual(await t.flush(), { delivered: 20, pending: 0 });
    assert.deepEqual(t.warnings.map((w) => w.message), [], 'no open failure was reported');
    assert.deepEqual(r.events.map((e) => e.message), Array.from({ length: 20 }, (_, i) => `m${i}`));
  });

  it('a file busy past the busy timeout: retried, a warn and no error; records wait (to highWaterMark, then counted and told), then ship', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const first = transport('http://127.0.0.1:9/', { dbPath });
    await first.close(); // a queue file exists
    const holder = new sqlite3.Database(dbPath);
    await exec(holder, 'BEGIN EXCLUSIVE; INSERT INTO state (key, value, at) VALUES (\'held\', \'x\', 0);');
    const r = await receiver();
    const t = transport(r.url, { dbPath, highWaterMark: 50 });
    const logger = winston.createLogger({ transports: [t] });
    logger.info('before the failure');
    await until(() => t.warnings.some((w) => /retrying with backoff/.test(w.message)), 20_000, 'the first failure');
    for (let i = 0; i < 100; i++) logger.info(`m${i}`);
    await sleep(50);
    assert.deepEqual(t.errors, []);
    assert.equal((await t.stats()).dropped['queue-unavailable'], 51, 'beyond highWaterMark, counted');
    assert.deepEqual(await t.flush(), { delivered: 0, pending: 50 }, 'flush() answers while the file cannot be opened');
    assert.equal(await t.pendingCount(), 50);
    await exec(holder, 'ROLLBACK;');
    await new Promise<void>((resolve) => holder.close(() => resolve()));
    await until(() => t.warnings.some((w) => /is open now/.test(w.message)), 40_000, 'the file to open');
    assert.equal((await t.flush()).pending, 0);
    const messages = r.events.map((e) => String(e.message));
    assert.equal(messages[0], '51 records dropped: queue-unavailable', 'the gap is told downstream first');
    assert.deepEqual(messages.slice(1), ['before the failure', ...Array.from({ length: 49 }, (_, i) => `m${i}`)]);
    assert.deepEqual(t.errors, []);
  });
});

describe('a synchronous burst while commits cannot keep up', () => {
  it('hands full chunks to the worker during the loop only while fewer than 4 × highWaterMark are not yet committed; then winston is held back; nothing is lost', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const r = await receiver();
    const t = transport(r.url, { dbPath, highWaterMark: 2000, batchSize: 1000 });
    const logger = winston.createLogger({ transports: [t] });
    logger.info('open');
    await t.committed(); // the file is open: full chunks may go to the worker during a loop
    // Another connection holds the write lock: every commit waits for it (inside the busy timeout).
    const holder = new sqlite3.Database(dbPath);
    await exec(holder, 'BEGIN IMMEDIATE; INSERT INTO state (key, value, at) VALUES (\'held\', \'x\', 0);');
    const pad = 'x'.repeat(2000); // ~500 records fill a 1 MiB chunk
    let calledBack = 0;
    const n = 20_000;
    for (let i = 0; i < n; i++) t.log({ level: 'info', message: `b${i}`, pad }, () => calledBack++);
    // No commit can end during the loop: at most 4 × highWaterMark records handed over (plus the
    // chunk that crossed it), then highWaterMark waiting here, before log() stops calling back.
    assert.ok(calledBack >= 8000 + 2000 && calledBack <= 8000 + 600 + 2000, `${calledBack} of ${n} log calls called back during the loop`);
    await exec(holder, 'ROLLBACK;');
    await new Promise<void>((resolve) => holder.close(() => resolve()));
    await until(() => calledBack === n, 20_000, 'every log call to be called back');
    await t.committed();
    assert.equal((await t.flush()).pending, 0);
    assert.deepEqual(r.events.map((e) => e.message), ['open', ...Array.from({ length: n }, (_, i) => `b${i}`)]);
    assert.deepEqual((await t.stats()).dropped, {});
  });
});

describe('every gap is marked downstream', () => {
  for (const overflow of ['drop-newest', 'drop-oldest'] as const) {
    it(`${overflow}: drops not yet told stay in the file; the notice ships from the next process, after a restart`, async () => {
      const dbPath = join(tempDir(), 'q.db');
      const r = await receiver();
      await r.stop(); // the same Vector, down for the first process
      const first = transport(r.url, { dbPath, maxQueueBytes: 64 * 1024, overflow, maxRetries: 1 });
      const logger = winston.createLogger({ transports: [first] });
      for (let i = 0; i < 600; i++) logger.info(`m${i}`, { pad: 'p'.repeat(300) });
      await first.committed();
      const dropped = (await first.stats()).dropped['queue-full'] ?? 0;
      assert.ok(dropped > 0, 'the bound dropped some');
      await first.close();

      await r.start();
      const second = transport(r.url, { dbPath, batchSize: 1000 });
      await until(async () => (await second.flush()).pending === 0, 20_000, 'the backlog to drain');
      const notices = r.events.filter((e) => /records dropped: queue-full$/.test(String(e.message)));
      const told = notices.reduce((n, e) => n + Number((e.extra as { dropped: number }).dropped), 0);
      assert.equal(told, dropped, `every drop told downstream (${notices.map((e) => e.message).join(', ')})`);
    });
  }
});

describe('the queue stays inside its bounds on disk', () => {
  const filesOf = (dbPath: string) => ['', '-wal', '-shm'].reduce((n, suffix) => n + (existsSync(dbPath + suffix) ? statSync(dbPath + suffix).size : 0), 0);

  it('maxQueueBytes bounds the database, its WAL and its shm together', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const bound = 1024 * 1024;
    const t = transport('http://127.0.0.1:9/', { dbPath, maxQueueBytes: bound, maxRetries: 1 });
    const logger = winston.createLogger({ transports: [t] });
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 1000; i++) logger.info(`r${round}-${i}`, { pad: 'x'.repeat(500) });
      await t.committed();
      assert.ok(filesOf(dbPath) <= bound, `round ${round}: ${filesOf(dbPath)} bytes on disk`);
    }
    const stats = await t.stats();
    assert.ok(stats.dropped['queue-full']! > 0);
    assert.ok(stats.queueBytes <= bound);
  });

  // A real small filesystem: a tmpfs the test mounts (root only, as CI runs), not max_page_count.
  const root = process.getuid?.() === 0 && spawnSync('mount', ['--version']).status === 0;
  // A round of 1000 records in one loop is one commit; a service that logs as it goes (a turn of
  // the event loop every 250) makes several, which can queue up behind one another.
  for (const perTurn of [1000, 250]) it(`a real full disk (a 3 MiB tmpfs), ${perTurn} records a turn: drop-oldest keeps the newest, counts disk-full, ships a notice, resumes`, { skip: root ? false : 'needs root to mount a tmpfs' }, async () => {
    const mnt = mkdtempSync(join(tmpdir(), 'winston-vector-tmpfs-'));
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt], { encoding: 'utf8' });
    assert.equal(mounted.status, 0, mounted.stderr);
    after(() => {
      spawnSync('umount', ['-l', mnt]);
      rmSync(mnt, { recursive: true, force: true });
    });
    const dbPath = join(mnt, 'queue', 'q.db');
    const r = await receiver();
    await r.stop(); // the same Vector, down while the disk fills
    const t = transport(r.url, { dbPath, maxRetries: 1 });
    const logger = winston.createLogger({ transports: [t] });
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 1000; i++) {
        logger.info(`r${round}-${i}`, { pad: 'x'.repeat(500) });
        if (i % perTurn === perTurn - 1) await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await t.committed();
    let stats = await t.stats();
    assert.equal(stats.dropped['write-failed'], undefined, 'nothing failed to write');
    const dropped = stats.dropped['disk-full'] ?? 0;
    assert.ok(dropped > 0, 'the full disk dropped records');
    await r.start();
    await until(async () => (await t.flush()).pending === 0, 30_000, 'the backlog to drain');
    const messages = r.events.map((e) => String(e.message));
    assert.ok(messages.includes('r9-999'), 'the newest record was kept (drop-oldest)');
    const told = r.events.filter((e) => /records dropped: disk-full$/.test(String(e.message))).reduce((n, e) => n + Number((e.extra as { dropped: number }).dropped), 0);
    assert.equal(told, dropped, 'a notice tells downstream of every drop');
    assert.equal(messages.filter((m) => /^r\d-\d+$/.test(m)).length + dropped, 10_000, 'every record delivered or counted');
    // Space is back: logging goes on.
    logger.info('after the disk was full');
    assert.equal((await t.flush()).pending, 0);
    assert.ok(r.events.some((e) => e.message === 'after the disk was full'));

    // Another program fills the disk; then frees only a little of it: writing resumes.
    await r.stop();
    const filler = join(mnt, 'filler');
    spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { encoding: 'utf8' }); // until the disk is full
    for (let i = 0; i < 5000; i++) logger.info(`full-${i}`, { pad: 'x'.repeat(500) });
    await t.committed();
    const before = (await t.stats()).dropped['disk-full'] ?? 0;
    assert.ok(before > dropped, 'records dropped while the disk is full');
    truncateSync(filler, Math.max(0, statSync(filler).size - 768 * 1024)); // 768 KiB freed
    for (let i = 0; i < 200; i++) logger.info(`freed-${i}`, { pad: 'x'.repeat(500) });
    await t.committed();
    await r.start();
    await until(async () => (await t.flush()).pending === 0, 30_000, 'the rest to drain');
    assert.ok(r.events.some((e) => e.message === 'freed-199'), 'the newest record after a little space came back arrived');
    stats = await t.stats();
    assert.equal(stats.dropped['write-failed'], undefined);
  });
});
