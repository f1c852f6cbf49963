/** The `winston-vector` command, run as users run it: the built bin in a child process. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import sqlite3 from 'sqlite3';
import winston from 'winston';
import { receiver, tempDir, transport, until } from './support/helpers';

const bin = join(__dirname, '..', 'dist', 'tools', 'cli.js');
const cli = (args: string[], timeout = 60_000) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout });

/** Like `cli`, without blocking this process: needed when the receiver runs here. */
function cliAsync(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A queue file with 3 pending records, 1 dead letter, drops, and a last error. */
async function queueFile(): Promise<string> {
  const dbPath = join(tempDir(), 'queue.db');
  const r = await receiver();
  r.rejectEvents((e) => e.message === 'poison');
  // Room for a few dozen of the 1 KB records below (the file, its WAL and shm count against it).
  const t = transport(r.url, { dbPath, batchSize: 1000, maxQueueBytes: 160 * 1024, maxRetries: 1 });
  const logger = winston.createLogger({ transports: [t] });
  logger.info('ok');
  logger.info('poison');
  await t.flush();
  await r.stop();
  for (let i = 0; i < 300; i++) logger.info(`big ${i}`, { pad: 'b'.repeat(1000) });
  await t.flush();
  await t.close();
  return dbPath;
}

describe('winston-vector CLI', () => {
  it('--help on every command, exit 0; no command or an unknown one, exit 2', () => {
    for (const args of [['--help'], ['status', '--help'], ['drain', '--help'], ['dead-letters', '--help'], ['receive', '--help'], ['demo', '--help']]) {
      const res = cli(args);
      assert.equal(res.status, 0, `${args.join(' ')}: ${res.stderr}`);
      assert.match(res.stdout, /Usage: winston-vector/);
    }
    assert.equal(cli([]).status, 2);
    const unknown = cli(['frobnicate']);
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const badOption = cli(['status', '--nope']);
    assert.equal(badOption.status, 2);
    assert.match(badOption.stderr, /--nope/);
  });

  it('status: a missing or foreign file is exit 3, naming it; never creates one', async () => {
    const dir = tempDir();
    const missing = cli(['status', '--db', join(dir, 'nope.db')]);
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /no queue file at .*nope\.db/);
    assert.equal(cli(['status', '--db', join(dir, 'nope.db')]).status, 3, 'still missing: status did not create it');

    writeFileSync(join(dir, 'text.db'), 'just text, not SQLite at all'.repeat(50));
    const text = cli(['status', '--db', join(dir, 'text.db')]);
    assert.equal(text.status, 3);
    assert.match(text.stderr, /text\.db/);

    const other = join(dir, 'other.db');
    await new Promise<void>((resolve) => {
      const db = new sqlite3.Database(other);
      db.exec('CREATE TABLE users (id INTEGER)', () => db.close(() => resolve()));
    });
    const foreign = cli(['status', '--db', other]);
    assert.equal(foreign.status, 3);
    assert.match(foreign.stderr, /not a winston-vector queue/);
  });

  it('status shows pending, bytes, oldest, dead letters, drops, last error and success; --json', async () => {
    const dbPath = await queueFile();
    const json = cli(['status', '--db', dbPath, '--json']);
    assert.equal(json.status, 0, json.stderr);
    const s = JSON.parse(json.stdout);
    assert.ok(s.pending > 0);
    assert.ok(s.pendingBytes > s.pending * 1000);
    assert.equal(typeof s.oldestPendingAgeMs, 'number');
    assert.equal(s.deadLetters, 1);
    assert.ok(s.dropped['queue-full'] > 0);
    assert.match(s.lastError.message, /ECONNREFUSED/);
    assert.match(s.lastSuccess.message, /^\d+ records? delivered$/);
    const text = cli(['status', '--db', dbPath]);
    assert.equal(text.status, 0);
    assert.match(text.stdout, new RegExp(`pending\\s+${s.pending} records`));
    assert.match(text.stdout, /dead letters\s+1/);
    assert.match(text.stdout, /dropped\s+queue-full \d+/);
  });

  it('drain ships everything with a summary; exit 1 with records left when the receiver is down', async () => {
    const dbPath = await queueFile();
    const status = JSON.parse(cli(['status', '--db', dbPath, '--json']).stdout) as { pending: number; destinations: Record<string, number> };
    const pending = status.pending;
    const [from] = Object.keys(status.destinations);
    assert.deepEqual(status.destinations, { [from!]: pending }, 'every record kept for the Vector it was logged for');

    const elsewhere = cli(['drain', '--db', dbPath, '--url', 'http://127.0.0.1:9/', '--rounds', '1', '--timeout', '500']);
    assert.match(elsewhere.stderr, new RegExp(`${pending} records? (are|is) for ${from}: not sent \\(pass --from`));
    assert.match(elsewhere.stdout, /delivered 0, dead-lettered 0, left 0/);

    const down = cli(['drain', '--db', dbPath, '--url', 'http://user:hunter2@127.0.0.1:9/', '--from', from!, '--rounds', '1', '--timeout', '500']);
    assert.equal(down.status, 1);
    assert.match(down.stdout, new RegExp(`delivered 0, dead-lettered 0, left ${pending}`));
    assert.match(down.stderr, /not everything could be delivered: .*ECONNREFUSED/);
    assert.doesNotMatch(down.stdout + down.stderr, /hunter2/);

    const r = await receiver();
    const res = await cliAsync(['drain', '--db', dbPath, '--url', r.url, '--from', from!]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`delivered ${pending}, dead-lettered 0, left 0`));
    assert.match(res.stderr, /\[#+\] \d+\/\d+/, 'a progress bar');
    assert.equal(r.received, pending);
    assert.equal(JSON.parse(cli(['status', '--db', dbPath, '--json']).stdout).pending, 0);
  });

  it('drain: a bad URL is exit 2; a missing file exit 3', async () => {
    const dbPath = await queueFile();
    const bad = cli(['drain', '--db', dbPath, '--url', 'ftp://x']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /`vectorUrl` must be an http\(s\) URL/);
    assert.equal(cli(['drain', '--db', dbPath]).status, 2, '--url is required');
    assert.equal(cli(['drain', '--db', join(tempDir(), 'none.db'), '--url', 'http://127.0.0.1:9/']).status, 3);
  });

  it('dead-letters list shows the receiver\'s answer; retry puts them back; purge deletes', async () => {
    const dbPath = await queueFile();
    const list = cli(['dead-letters', 'list', '--db', dbPath, '--json']);
    assert.equal(list.status, 0, list.stderr);
    const rows = JSON.parse(list.stdout);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].status, 400);
    assert.match(rows[0].reason, /Contents failed to deliver to sink/);
    assert.equal(JSON.parse(rows[0].body).message, 'poison');
    assert.match(cli(['dead-letters', 'list', '--db', dbPath]).stdout, /#\d+ .* HTTP 400 .*Contents failed/);

    const before = JSON.parse(cli(['status', '--db', dbPath, '--json']).stdout).pending as number;
    const retry = cli(['dead-letters', 'retry', '--db', dbPath]);
    assert.match(retry.stdout, /^1 dead letter put back in the queue/);
    const after = JSON.parse(cli(['status', '--db', dbPath, '--json']).stdout);
    assert.deepEqual([after.pending, after.deadLetters], [before + 1, 0]);

    const r = await receiver();
    r.rejectEvents((e) => e.message === 'poison');
    assert.equal((await cliAsync(['drain', '--db', dbPath, '--url', r.url])).code, 0);
    assert.equal(JSON.parse(cli(['status', '--db', dbPath, '--json']).stdout).deadLetters, 1, 'rejected again');
    const id = JSON.parse(cli(['dead-letters', 'list', '--db', dbPath, '--json']).stdout)[0].id as number;
    const absent = cli(['dead-letters', 'purge', '--db', dbPath, '--id', String(id + 1000)]);
    assert.equal(absent.status, 1, 'a missing id is not done');
    assert.match(absent.stdout, /^0 dead letters deleted/);
    assert.match(absent.stderr, new RegExp(`no dead letter with id ${id + 1000}`));
    const retryAbsent = cli(['dead-letters', 'retry', '--db', dbPath, '--id', String(id + 1000)]);
    assert.equal(retryAbsent.status, 1);
    assert.match(retryAbsent.stderr, new RegExp(`no dead letter with id ${id + 1000}`));
    const purged = cli(['dead-letters', 'purge', '--db', dbPath, '--id', String(id)]);
    assert.equal(purged.status, 0, purged.stderr);
    assert.match(purged.stdout, /^1 dead letter deleted/);
    assert.equal(cli(['dead-letters', 'list', '--db', dbPath]).stdout, 'no dead letters\n');
    assert.equal(cli(['dead-letters', 'frob', '--db', dbPath]).status, 2);
  });

  it('receive answers like Vector and prints each record; --out appends; a busy port is exit 4', async () => {
    const dir = tempDir();
    const out = join(dir, 'records.ndjson');
    writeFileSync(out, '{"already":"there"}\n');
    const start = (args: string[]) => {
      const child = spawn(process.execPath, [bin, 'receive', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      const io = { stdout: '', stderr: '' };
      child.stdout.on('data', (d: Buffer) => (io.stdout += d));
      child.stderr.on('data', (d: Buffer) => (io.stderr += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      return { child, io, exited };
    };
    for (const args of [[], ['--out', out]]) {
      const rx = start(args);
      await until(() => /receiving on (http:\/\/\S+)/.test(rx.io.stderr), 10_000, 'the receiver');
      const url = /receiving on (http:\/\/\S+)/.exec(rx.io.stderr)![1]!;
      const t = transport(url);
      const logger = winston.createLogger({ transports: [t] });
      logger.info('one', { n: 1 });
      logger.info('two');
      assert.deepEqual(await t.flush(), { delivered: 2, pending: 0 });
      rx.child.kill('SIGTERM');
      assert.equal(await rx.exited, 0);
      const lines = (args.length ? readFileSync(out, 'utf8') : rx.io.stdout).trim().split('\n').map((l) => JSON.parse(l));
      const got = lines.filter((l) => l.message).map((l) => [l.message, l.source_type]);
      assert.deepEqual(got, [['one', 'http_server'], ['two', 'http_server']]);
      if (args.length) assert.deepEqual(lines[0], { already: 'there' }, 'appended');
      assert.match(rx.io.stderr, /stopped after 2 records/);
    }
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as net.AddressInfo).port;
    const res = cli(['receive', '--port', String(port)]);
    busy.close();
    assert.equal(res.status, 4);
    assert.match(res.stderr, new RegExp(`port ${port} is in use`));
    assert.equal(cli(['receive', '--decoding', 'xml']).status, 2);
  });

  it('refuses what it cannot do in one line, exit 2: an --out it cannot write, zero or negative counts, unknown options', () => {
    const dir = tempDir();
    const cases: Array<[string[], RegExp]> = [
      [['receive', '--port', '0', '--out', join(dir, 'no', 'such', 'dir', 'out.ndjson')], /--out ".*out\.ndjson" cannot be written: ENOENT/],
      [['receive', '--port', '-1'], /--port must be a whole number, 0 to 65535, got "-1"/],
      [['receive', '--port', '70000'], /--port must be a whole number, 0 to 65535, got "70000"/],
      [['drain', '--db', join(dir, 'q.db'), '--url', 'http://127.0.0.1:9/', '--batch-size', '0'], /--batch-size must be a whole number, 1 or more, got "0"/],
      [['drain', '--db', join(dir, 'q.db'), '--url', 'http://127.0.0.1:9/', '--rounds', '0'], /--rounds must be a whole number, 1 or more, got "0"/],
      [['drain', '--db', join(dir, 'q.db'), '--url', 'http://127.0.0.1:9/', '--timeout', '1.5'], /--timeout must be a whole number/],
      [['dead-letters', 'list', '--db', join(dir, 'q.db'), '--limit', '0'], /--limit must be a whole number, 1 or more/],
      [['demo', '--bogus'], /Unknown option '--bogus'/],
      [['status', 'extra'], /unexpected argument "extra"/],
      [['receive', '--bogus'], /Unknown option '--bogus'/],
      [['drain', '--bogus'], /Unknown option '--bogus'/],
      [['dead-letters', 'list', '--bogus'], /Unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const res = cli(args, 20_000);
      assert.equal(res.status, 2, `${args.join(' ')}: ${res.stderr}`);
      assert.match(res.stderr, message, args.join(' '));
      assert.doesNotMatch(res.stderr, /\n\s+at /, `${args.join(' ')}: no stack trace`);
    }
  });

  it("status's last success is stats()'s, also after a run with many batches", async () => {
    const r = await receiver();
    const dbPath = join(tempDir(), 'q.db');
    const t = transport(r.url, { dbPath, batchSize: 10 });
    const logger = winston.createLogger({ transports: [t] });
    // Batches inside 5 s: only the first is written at once, the latest at close.
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 10; i++) logger.info(`r${round} ${i}`);
      await t.flush();
    }
    const stats = await t.stats();
    await t.close();
    const s = JSON.parse(cli(['status', '--db', dbPath, '--json']).stdout);
    assert.equal(s.lastSuccess.at, stats.lastSuccessAt!.toISOString());
    assert.equal(s.lastSuccess.message, '10 records delivered');
  });

  it('drain says which live process holds the records it could not take', async () => {
    const dbPath = join(tempDir(), 'q.db');
    // A receiver that never answers: the child's request hangs with its batch claimed.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const silentUrl = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}/`;
    const script = `
      const winston = require('winston');
      const { VectorTransport } = require(${JSON.stringify(join(__dirname, '..', 'dist', 'index.js'))});
      const t = new VectorTransport({ vectorUrl: ${JSON.stringify(silentUrl)}, project: 'p', table: 't', dbPath: ${JSON.stringify(dbPath)}, timeout: 60000, batchSize: 100 });
      t.on('warn', () => {});
      const logger = winston.createLogger({ transports: [t] });
      for (let i = 0; i < 100; i++) logger.info('held ' + i);
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['-e', script], { cwd: join(__dirname, '..'), stdio: 'ignore' });
    try {
      await until(() => sockets.length > 0, 20_000, 'the child to send');
      const r = await receiver();
      const res = await cliAsync(['drain', '--db', dbPath, '--url', r.url, '--from', silentUrl, '--rounds', '1']);
      assert.equal(res.code, 1, res.stderr);
      assert.match(res.stdout, /delivered 0, dead-lettered 0, left 100/);
      assert.match(res.stderr, new RegExp(`100 records are held by process ${child.pid} \\(its lease ends in \\S+\\): not sent by this drain`));
      assert.equal(r.received, 0);
      const status = cli(['status', '--db', dbPath]);
      assert.match(status.stdout, new RegExp(`held\\s+100 records are held by process ${child.pid}`));
    } finally {
      child.kill('SIGKILL');
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});
