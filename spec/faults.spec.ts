/**
 * The fault suite: the promise that an acknowledged record is never lost, under real faults, with
 * real processes, real SQLite files and the Vector stand-in. Every case counts exactly.
 * `npm run test:soak` runs the long variants (more kills, more records).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import sqlite3 from 'sqlite3';
import winston from 'winston';
import type { VectorTransport } from '../lib/index';
import { conservation, inOrderPerProducer, LoggingChild } from './support/children';
import { receiver, sleep, tempDir, transport, until } from './support/helpers';
import type { VectorReceiver } from './support/vector-receiver';

const SOAK = process.env.WV_SOAK === '1';
const ids = (r: VectorReceiver) => r.events.map((e) => String(e.message));

/** Ships everything left in `dbPath` with a fresh transport, then closes it. */
async function drainWith(url: string, dbPath: string, from?: string): Promise<void> {
  const t = transport(url, { dbPath, batchSize: 1000, destination: from });
  await until(async () => (await t.flush()).pending === 0, 30_000, 'the queue to drain');
  await t.close();
}

describe('faults', () => {
  it('kill -9 at random points, restarted each time: no acknowledged record lost, order kept', async () => {
    const r = await receiver();
    r.delay(2); // widens the window in which a request is in flight
    const dbPath = join(tempDir(), 'q.db');
    const runs = SOAK ? 60 : 8;
    const count = 3000;
    const acked = new Set<string>();
    for (let run = 0; run < runs; run++) {
      const child = new LoggingChild({ dbPath, url: r.url, run, count, burst: 25, mode: 'keep', options: { batchSize: 50 } });
      await child.waitFor((c) => c.acked.length > 0, 20_000, 'the first ack');
      await sleep(20 + Math.floor(Math.random() * 150));
      child.proc.kill('SIGKILL');
      const { signal } = await child.exited;
      assert.equal(signal, 'SIGKILL');
      for (const i of child.acked) acked.add(`${run}:${i}`);
    }
    await drainWith(r.url, dbPath);
    const received = ids(r);
    const c = conservation(acked, (id) => /^\d+:\d+$/.test(id) && Number(id.split(':')[0]) < runs && Number(id.split(':')[1]) < count, received);
    assert.deepEqual(c.missing, [], 'every acknowledged record arrived');
    assert.deepEqual(c.unknown, [], 'nothing that was never logged arrived');
    assert.ok(inOrderPerProducer(received), 'each process\'s records arrived in order');
    assert.ok(acked.size > runs, `records were acknowledged before the kills (${acked.size})`);
    console.log(`# kill -9 x${runs}: ${acked.size} acknowledged, ${received.length} received, ${c.duplicates} duplicates`);
  });

  it('killed while a request is in flight: the batch is delivered after the restart', async () => {
    const r = await receiver();
    const dbPath = join(tempDir(), 'q.db');
    r.holdNext(1);
    const child = new LoggingChild({ dbPath, url: r.url, run: 'A', count: 10, mode: 'hang', options: { batchSize: 10 } });
    await child.waitFor((c) => c.acked.length === 10, 20_000, '10 acks');
    await until(() => r.heldCount === 1, 10_000, 'the request to be held');
    child.proc.kill('SIGKILL');
    await child.exited;
    r.failHeld(503); // Vector never accepted it
    assert.equal(r.events.length, 0);
    await drainWith(r.url, dbPath);
    assert.deepEqual(ids(r), Array.from({ length: 10 }, (_, i) => `A:${i}`));
  });

  it('receiver down, then up: backoff stays within its cap, memory stays flat, the queue drains', async () => {
    // A server that accepts and resets every connection: each attempt leaves a timestamp.
    const attempts: number[] = [];
    const resetter = net.createServer((socket) => {
      attempts.push(Date.now());
      socket.resetAndDestroy();
    });
    await new Promise<void>((resolve) => resetter.listen(0, '127.0.0.1', resolve));
    const port = (resetter.address() as net.AddressInfo).port;
    const url = `http://127.0.0.1:${port}/`;
    const t = transport(url, { maxRetries: 2, retryDelay: 20, maxRetryDelay: 200, flushInterval: 50 });
    winston.createLogger({ transports: [t] }).info('waiting');
    await sleep(SOAK ? 10_000 : 2500);
    await new Promise<void>((resolve) => resetter.close(() => resolve()));
    const gaps = attempts.slice(1).map((a, i) => a - attempts[i]!);
    assert.ok(attempts.length >= 8, `kept trying (${attempts.length} attempts)`);
    assert.ok(Math.max(...gaps) <= 200 + 150, `no wait beyond the cap (max gap ${Math.max(...gaps)} ms)`);
    assert.ok(attempts.length <= 2500 / 1 && gaps.filter((g) => g < 2).length < gaps.length / 2, 'not a hot loop');
    assert.equal(t.warnings.filter((w) => w.action === 'retry').length, 1, 'one warn for the whole outage');

    // Memory: 100k records logged while the receiver is down (a child, measured after GC).
    const dbPath = join(tempDir(), 'q.db');
    const total = SOAK ? 500_000 : 100_000;
    const child = new LoggingChild(
      { dbPath, url: 'http://127.0.0.1:9/', run: 'M', count: total, burst: 1000, pad: 200, mode: 'memory', options: { batchSize: 1000 } },
      ['--expose-gc'],
    );
    const { code } = await child.exited;
    assert.equal(code, 0, child.stderr);
    const heaps = child.lines.filter((l) => l.startsWith('heap ')).map((l) => Number(l.slice(5)));
    assert.equal(heaps.length, 2);
    const growth = heaps[1]! - heaps[0]!;
    assert.ok(growth < 16 * 1024 * 1024, `heap grew ${(growth / 1048576).toFixed(1)} MiB for ${total} records kept on disk`);
    assert.equal(child.acked.length, total);

    const r = await receiver();
    await drainWith(r.url, dbPath, 'http://127.0.0.1:9/');
    assert.equal(r.events.length, total);
    assert.ok(inOrderPerProducer(ids(r)));
  });

  describe('the status matrix: each answer, its action and its timing', () => {
    const date = (ms: number) => new Date(Date.now() + ms).toUTCString();
    const cases: Array<{
      name: string;
      answers: Array<{ status: number; headers?: Record<string, string> | (() => Record<string, string>); times?: number }>;
      delivered: number;
      pending: number;
      dead: number;
      requests: number;
      minMs?: number;
      warn?: string;
    }> = [
      { name: '400 on the single record: dead-lettered', answers: [{ status: 400, times: 99 }], delivered: 0, pending: 0, dead: 1, requests: 1, warn: 'dead-letter' },
      { name: '401: kept, not retried in the round', answers: [{ status: 401, times: 99 }], delivered: 0, pending: 1, dead: 0, requests: 1, warn: 'blocked' },
      { name: '404: kept', answers: [{ status: 404, times: 99 }], delivered: 0, pending: 1, dead: 0, requests: 1, warn: 'blocked' },
      { name: '415: kept', answers: [{ status: 415, times: 99 }], delivered: 0, pending: 1, dead: 0, requests: 1, warn: 'blocked' },
      { name: '422: kept', answers: [{ status: 422, times: 99 }], delivered: 0, pending: 1, dead: 0, requests: 1, warn: 'blocked' },
      { name: '408 then 200: retried', answers: [{ status: 408 }], delivered: 1, pending: 0, dead: 0, requests: 2 },
      { name: '413 on a single record: dead-lettered', answers: [{ status: 413, times: 99 }], delivered: 0, pending: 0, dead: 1, requests: 1, warn: 'dead-letter' },
      { name: '429 Retry-After: 1 (seconds)', answers: [{ status: 429, headers: { 'Retry-After': '1' } }], delivered: 1, pending: 0, dead: 0, requests: 2, minMs: 950 },
      { name: '429 Retry-After: HTTP date', answers: [{ status: 429, headers: () => ({ 'Retry-After': date(2000) }) }], delivered: 1, pending: 0, dead: 0, requests: 2, minMs: 900 },
      { name: '500 then 200', answers: [{ status: 500 }], delivered: 1, pending: 0, dead: 0, requests: 2 },
      { name: '502 then 200', answers: [{ status: 502 }], delivered: 1, pending: 0, dead: 0, requests: 2 },
      { name: '503 three times: the round fails, kept', answers: [{ status: 503, times: 3 }], delivered: 0, pending: 1, dead: 0, requests: 3, warn: 'retry' },
      { name: '504 then 200', answers: [{ status: 504 }], delivered: 1, pending: 0, dead: 0, requests: 2 },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const r = await receiver();
        r.script(...c.answers.map((a) => ({ ...a, headers: typeof a.headers === 'function' ? a.headers() : a.headers })));
        const t = transport(r.url, { maxRetries: 3, retryDelay: 10, maxRetryDelay: 5000 });
        winston.createLogger({ transports: [t] }).info('x');
        const started = Date.now();
        // Requests counted as the flush answers: after a failed round the next one may start
        // within milliseconds (full jitter), while this test still waits for stats().
        let requests = 0;
        const result = await t.flush().then((res) => ((requests = r.requests.length), res));
        const elapsed = Date.now() - started;
        const stats = await t.stats();
        assert.deepEqual(
          { delivered: result.delivered, pending: result.pending, dead: stats.deadLettered, requests },
          { delivered: c.delivered, pending: c.pending, dead: c.dead, requests: c.requests },
        );
        if (c.minMs !== undefined) assert.ok(elapsed >= c.minMs, `waited ${elapsed} ms`);
        if (c.warn) assert.equal(t.warnings.filter((w) => w.action === c.warn).length, 1);
        else assert.equal(t.warnings.length, 0);
      });
    }

    it('a response held past the timeout: retried after `timeout` each attempt, then kept', async () => {
      const r = await receiver();
      r.hold();
      const t = transport(r.url, { maxRetries: 2, timeout: 300, retryDelay: 1, maxRetryDelay: 1 });
      winston.createLogger({ transports: [t] }).info('x');
      const started = Date.now();
      const result = await t.flush();
      const elapsed = Date.now() - started;
      assert.equal(result.pending, 1);
      assert.ok(elapsed >= 600 && elapsed < 3000, `two attempts of 300 ms (${elapsed} ms)`);
      assert.match(String((await t.stats()).lastError?.message), /timeout: no answer within 300 ms/);
    });
  });

  it('poison: one rejected record in a batch of 1000 is dead-lettered, the other 999 arrive in order', async () => {
    const r = await receiver();
    r.rejectEvents((e) => e.message === 'poison');
    const t = transport(r.url, { batchSize: 1000 });
    const logger = winston.createLogger({ transports: [t] });
    for (let i = 0; i < 1000; i++) logger.info(i === 617 ? 'poison' : `P:${i}`);
    const result = await t.flush();
    assert.equal(result.pending, 0);
    const expected = Array.from({ length: 1000 }, (_, i) => `P:${i}`).filter((m) => m !== 'P:617');
    assert.deepEqual(ids(r), expected);
    assert.equal((await t.stats()).deadLettered, 1);
    assert.ok(r.requests.length <= 2 * Math.ceil(Math.log2(1000)) + 1, `bisection, not one request per record (${r.requests.length})`);
  });

  it('several processes share one dbPath: no SQLITE_BUSY, nothing lost, nothing sent twice', async () => {
    const r = await receiver();
    const dbPath = join(tempDir(), 'q.db');
    const n = SOAK ? 6 : 3;
    const count = SOAK ? 5000 : 1000;
    const children = Array.from(
      { length: n },
      (_, k) => new LoggingChild({ dbPath, url: r.url, run: `W${k}`, count, burst: 20, mode: 'close', options: { batchSize: 40 } }),
    );
    const exits = await Promise.all(children.map((c) => c.exited));
    for (const [k, e] of exits.entries()) assert.equal(e.code, 0, children[k]!.stderr);
    for (const c of children) {
      assert.doesNotMatch(c.stderr, /SQLITE_BUSY|database is locked/);
      assert.equal(c.acked.length, count);
    }
    const received = ids(r);
    const c = conservation(
      children.flatMap((ch, k) => ch.acked.map((i) => `W${k}:${i}`)),
      (id) => /^W\d+:\d+$/.test(id),
      received,
    );
    assert.deepEqual([c.missing.length, c.unknown.length, c.duplicates], [0, 0, 0]);
    assert.equal(received.length, n * count);
    // Order is not promised here: another process may ship a later batch of yours first (README).
  });

  it('a process paused (SIGSTOP) past its lease cannot double-send or delete what another reclaimed', async () => {
    const r = await receiver();
    const dbPath = join(tempDir(), 'q.db');
    r.holdNext(1);
    const a = new LoggingChild({
      dbPath,
      url: r.url,
      run: 'S',
      count: 20,
      mode: 'hang',
      options: { batchSize: 20, leaseTimeout: 300, maxRetries: 3, retryDelay: 50, headers: { 'X-Proc': 'A' } },
    });
    await a.waitFor((c) => c.acked.length === 20, 20_000, '20 acks');
    await until(() => r.heldCount === 1, 10_000, 'A\'s request to be held');
    a.proc.kill('SIGSTOP');
    await sleep(400); // past A's lease
    const b = transport(r.url, { dbPath, batchSize: 100, headers: { 'X-Proc': 'B' } });
    const taken = await b.flush();
    assert.deepEqual(taken, { delivered: 20, pending: 0 });
    r.failHeld(503); // A's held request fails: A would resend, if it still thought it owned the batch
    a.proc.kill('SIGCONT');
    await sleep(700);
    a.proc.kill('SIGKILL');
    await a.exited;
    const fromA = r.requests.filter((q) => q.headers['x-proc'] === 'A');
    assert.equal(fromA.length, 1, 'A sent its batch once, and never again after B took it');
    assert.deepEqual(ids(r), Array.from({ length: 20 }, (_, i) => `S:${i}`), 'each record arrived exactly once');
    assert.equal(await b.pendingCount(), 0);
  });

  it('disk full (SQLite page limit): logging never throws, drops are counted, it recovers', async () => {
    const r = await receiver();
    await r.stop();
    const t = transport(r.url, { maxRetries: 1, batchSize: 100_000 });
    const logger = winston.createLogger({ transports: [t] });
    logger.info('before');
    await t.flush();
    await t.queueExec('PRAGMA max_page_count = 30');
    for (let i = 0; i < 3000; i++) logger.info(`full:${i}`, { pad: 'z'.repeat(200) });
    await t.flush();
    const stats = await t.stats();
    const dropped = stats.dropped['disk-full'] ?? 0;
    assert.ok(dropped > 0, 'records were dropped for the full disk');
    assert.ok(t.warnings.some((w) => /dropped \(disk-full\)/.test(w.message)));
    await t.queueExec('PRAGMA max_page_count = 1073741823');
    logger.info('after');
    await r.start();
    const result = await t.flush();
    assert.equal(result.pending, 0);
    const got = ids(r).filter((m) => m.startsWith('full:') || m === 'before' || m === 'after');
    assert.equal(got.length + dropped, 3002, 'every record is delivered or counted as dropped');
    assert.equal(got.at(-1), 'after', 'logging recovered');
    const notices = r.events.filter((e) => /records dropped: disk-full/.test(String(e.message)));
    assert.equal(notices.reduce((n, e) => n + Number((e.extra as { dropped: number }).dropped), 0), dropped, 'the gap is reported downstream');
    assert.equal(notices[0]!.level, 'WARNING');
  });

  describe('damaged files', () => {
    async function fill(dbPath: string, n: number): Promise<void> {
      const child = new LoggingChild({ dbPath, url: 'http://127.0.0.1:9/', run: 'D', count: n, pad: 500, mode: 'hang', options: { batchSize: 100_000 } });
      await child.waitFor((c) => c.acked.length === n, 20_000, 'acks');
      child.proc.kill('SIGKILL');
      await child.exited;
    }

    async function checkpoint(dbPath: string): Promise<void> {
      const db = new sqlite3.Database(dbPath);
      await new Promise<void>((resolve, reject) => db.exec('PRAGMA wal_checkpoint(TRUNCATE)', (e) => (e ? reject(e) : resolve())));
      await new Promise<void>((resolve) => db.close(() => resolve()));
    }

    async function continues(dbPath: string): Promise<VectorTransport & { warnings: Error[] }> {
      const r = await receiver();
      const t = transport(r.url, { dbPath });
      winston.createLogger({ transports: [t] }).info('still logging');
      await t.flush();
      assert.ok(ids(r).includes('still logging'));
      return t;
    }

    it('a queue file damaged inside (marked as ours) is set aside, kept, with a warn; logging continues', async () => {
      const dir = tempDir();
      const dbPath = join(dir, 'q.db');
      await fill(dbPath, 2000);
      await checkpoint(dbPath);
      for (const f of ['-wal', '-shm']) rmSync(dbPath + f, { force: true });
      const bytes = readFileSync(dbPath);
      bytes.fill(7, 4096); // the header page stays: still recognisably ours
      writeFileSync(dbPath, bytes);
      const t = await continues(dbPath);
      assert.ok(t.warnings.some((w) => /set aside as .*q\.db\.corrupt-/.test(w.message)));
      assert.equal(readdirSync(dir).filter((f) => /^q\.db\.corrupt-\d+$/.test(f)).length, 1);
    });

    it('a truncated file is set aside; logging continues', async () => {
      const dir = tempDir();
      const dbPath = join(dir, 'q.db');
      await fill(dbPath, 2000);
      const r = await receiver();
      await checkpoint(dbPath); // move the records from the WAL into the main file, then cut that
      truncateSync(dbPath, Math.floor(statSync(dbPath).size / 2));
      for (const f of ['-wal', '-shm']) rmSync(dbPath + f, { force: true });
      // The records were logged for port 9 (down): this transport ships that destination's.
      const t = transport(r.url, { dbPath, destination: 'http://127.0.0.1:9/', batchSize: 1000 });
      winston.createLogger({ transports: [t] }).info('after truncation');
      await until(async () => (await t.flush()).pending === 0, 20_000, 'the queue to drain');
      assert.ok(ids(r).includes('after truncation'));
      const warn = t.warnings.map((w) => w.message).find((m) => /set aside/.test(m));
      const m = /(\d+) record\(s\) read from it were kept, (\d+) could not be read/.exec(warn ?? '');
      assert.ok(m, `the warning counts what was kept and lost: ${warn}`);
      const [saved, lost] = [Number(m[1]), Number(m[2])];
      assert.equal(saved + lost, 2000, 'every record of the damaged file is accounted for');
      assert.ok(saved > 0, 'the readable half was salvaged');
      const salvaged = ids(r).filter((x) => x.startsWith('D:'));
      assert.equal(salvaged.length, saved);
      assert.ok(inOrderPerProducer(salvaged), 'salvaged in order');
      if (lost > 0) {
        const notice = r.events.find((e) => String(e.message) === `${lost} records dropped: damaged-file`);
        assert.ok(notice, 'a notice tells downstream about the lost ones');
        assert.equal((await t.stats()).dropped['damaged-file'], lost);
      }
      assert.ok(readdirSync(dir).some((f) => f.startsWith('q.db.corrupt-')));
    });

    it('a missing -wal/-shm: the file opens, logging continues (commits only in the WAL are gone)', async () => {
      const dbPath = join(tempDir(), 'q.db');
      await fill(dbPath, 50);
      assert.ok(existsSync(`${dbPath}-wal`));
      rmSync(`${dbPath}-wal`);
      rmSync(`${dbPath}-shm`, { force: true });
      const t = await continues(dbPath);
      assert.equal(t.warnings.filter((w) => /set aside/.test(w.message)).length, 0);
    });
  });

  it('hostile values in log calls: no throw, no hang, other records unaffected', async () => {
    const r = await receiver();
    const t = transport(r.url, { maxRecordBytes: 256 * 1024 });
    // winston's default json() format runs before any transport and throws on a throwing getter;
    // the transport serializes by itself, so it needs no logger format (createVectorLogger sets none).
    const logger = winston.createLogger({ format: winston.format((info) => info)(), transports: [t] });
    const circular: Record<string, unknown> = {};
    circular.me = circular;
    let deep: Record<string, unknown> = {};
    for (let i = 0; i < 100_000; i++) deep = { deep };
    const hostile: unknown[] = [
      { circular },
      { getter: Object.defineProperty({}, 'x', { enumerable: true, get: () => { throw new Error('no'); } }) },
      { proxy: new Proxy({}, { get() { throw new Error('trap'); }, ownKeys() { throw new Error('keys'); } }) },
      { nullProto: Object.create(null) },
      { big: 10n ** 30n },
      { huge: 'h'.repeat(3 * 1024 * 1024) },
      { deep },
      { fn: () => 1, sym: Symbol('s') },
    ];
    const messages: unknown[] = [Symbol('m'), 42, null, undefined, { an: 'object' }, ['array'], 10n];
    let k = 0;
    assert.doesNotThrow(() => {
      for (const meta of hostile) {
        logger.info(`ok:${k++}`);
        logger.warn('hostile meta', meta as object);
      }
      for (const m of messages) {
        logger.info(`ok:${k++}`);
        logger.log({ level: 'info', message: m as string });
      }
    });
    const result = await t.flush();
    assert.equal(result.pending, 0);
    const oks = ids(r).filter((m) => m.startsWith('ok:'));
    assert.deepEqual(oks, Array.from({ length: k }, (_, i) => `ok:${i}`));
    assert.equal(r.events.length, hostile.length + messages.length + k, 'the hostile records arrived too');
    for (const e of r.events) assert.ok(JSON.stringify(e).length <= 256 * 1024 + 1024);
  });

  describe('security', () => {
    function certificate(dir: string): { key: string; cert: string } {
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
      ], { stdio: 'ignore' });
      return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
    }

    it('https with a custom CA; an unknown CA is refused (records kept); rejectUnauthorized: false', async () => {
      const tls = certificate(tempDir());
      const r = await receiver({ tls });
      const trusted = transport(r.url, { tls: { ca: tls.cert } });
      winston.createLogger({ transports: [trusted] }).info('over tls');
      assert.deepEqual(await trusted.flush(), { delivered: 1, pending: 0 });

      const strange = transport(r.url, { maxRetries: 1 });
      winston.createLogger({ transports: [strange] }).info('not trusted');
      assert.deepEqual(await strange.flush(), { delivered: 0, pending: 1 });
      assert.match(strange.warnings[0]!.message, /self[- ]signed|certificate/i);

      const loose = transport(r.url, { tls: { rejectUnauthorized: false } });
      winston.createLogger({ transports: [loose] }).info('unchecked');
      assert.deepEqual(await loose.flush(), { delivered: 1, pending: 0 });
      assert.deepEqual(ids(r), ['over tls', 'unchecked']);
    });

    it('basic and bearer credentials never show in warnings, errors, stats or the database', async () => {
      const secret = 'S3cr3t-Pa55';
      const bearer = 'tok-9f8e7d6c';
      const basic = await receiver({ auth: { username: 'svc', password: 'other' } });
      const dbPath = join(tempDir(), 'q.db');
      const t1 = transport(basic.url.replace('http://', `http://svc:${secret}@`), { dbPath, maxRetries: 1 });
      winston.createLogger({ transports: [t1] }).info('basic');
      await t1.flush();
      const bearerReceiver = await receiver({ requireHeaders: { Authorization: `Bearer right` } });
      const t2 = transport(bearerReceiver.url, { maxRetries: 1, headers: { Authorization: `Bearer ${bearer}` } });
      winston.createLogger({ transports: [t2] }).info('bearer');
      await t2.flush();
      const down = transport(`http://svc:${secret}@127.0.0.1:9/`, { maxRetries: 1 });
      winston.createLogger({ transports: [down] }).info('down');
      await down.flush();
      assert.throws(() => transport(`ftp://svc:${secret}@host/`), (err: Error) => !err.message.includes(secret));

      const seen = [t1, t2, down].flatMap((t) => t.warnings).map((w) => `${w.message} ${String(w.cause)} ${JSON.stringify(w)} ${w.stack}`);
      assert.ok(seen.length >= 3);
      const stats = JSON.stringify(await Promise.all([t1.stats(), t2.stats(), down.stats()]));
      const base64 = Buffer.from(`svc:${secret}`).toString('base64');
      for (const text of [...seen, stats]) {
        for (const s of [secret, bearer, base64]) assert.ok(!text.includes(s), `"${s}" leaked into: ${text.slice(0, 200)}`);
      }
      await t1.close();
      for (const f of readdirSync(join(dbPath, '..'))) {
        const bytes = readFileSync(join(dbPath, '..', f));
        for (const s of [secret, bearer, base64]) assert.equal(bytes.includes(s), false, `${s} in ${f}`);
      }
    });
  });
});
