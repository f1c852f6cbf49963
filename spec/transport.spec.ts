import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import winston from 'winston';
import { VectorTransport } from '../lib/index';
import { reached } from '../lib/delivery/thread';
import { Connection } from '../lib/queue/sqlite';
import { receiver, sleep, tempDir, transport, until } from './support/helpers';
import type { VectorReceiver } from './support/vector-receiver';

function loggerWith(t: VectorTransport, level = 'silly') {
  return winston.createLogger({ level, transports: [t] });
}

/** The sizes of the transport's commits while `log` logs through a logger on `t` and they settle. */
async function commitSizes(t: VectorTransport, log: (logger: winston.Logger) => void): Promise<number[]> {
  const sizes: number[] = [];
  const count = (rows: number) => sizes.push(rows);
  t.on('commit', count);
  try {
    log(loggerWith(t));
    await t.committed();
  } finally {
    t.off('commit', count);
  }
  return sizes;
}

/** A transport with `options` whose file is open (one record committed), and the sizes of its commits from then on. */
async function openedWith(options: Partial<ConstructorParameters<typeof VectorTransport>[0]>) {
  const r = await receiver();
  const t = transport(r.url, options);
  const logger = loggerWith(t);
  logger.info('open');
  await t.committed();
  const sizes: number[] = [];
  t.on('commit', (rows: number) => sizes.push(rows));
  return { r, t, logger, sizes };
}

const messages = (events: Array<Record<string, unknown>>) => events.map((e) => e.message);

/** Flushes `t` and checks that `r` received `${prefix}0` … `${prefix}${n - 1}`, each once, in order. */
async function deliveredInOrder(t: VectorTransport, r: VectorReceiver, prefix: string, n: number): Promise<void> {
  await t.flush();
  await r.waitForEvents(n);
  assert.deepEqual(messages(r.events), Array.from({ length: n }, (_, i) => `${prefix}${i}`));
}

describe('VectorTransport through a winston logger', () => {
  it('delivers records in logging order, as JSON arrays, gzip-compressed', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 7 });
    const logger = loggerWith(t);
    for (let i = 0; i < 50; i++) logger.info(`m${i}`, { i });
    const result = await t.flush();
    assert.equal(result.pending, 0);
    await r.waitForEvents(50);
    assert.deepEqual(messages(r.events), Array.from({ length: 50 }, (_, i) => `m${i}`));
    for (const req of r.requests) {
      assert.equal(req.headers['content-encoding'], 'gzip');
      assert.equal(req.headers['content-type'], 'application/json');
      assert.ok(req.events <= 7, 'a request never carries more than batchSize records');
    }
    assert.equal(r.events[0]!.project, 'shop');
    assert.equal(r.events[0]!.table, 'app_logs');
    assert.deepEqual(r.events[3]!.extra, { i: 3 });
  });

  it('ships on its own once batchSize records are pending', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 10 });
    const logger = loggerWith(t);
    for (let i = 0; i < 10; i++) logger.info(`b${i}`);
    await r.waitForEvents(10, 5000);
    assert.equal(r.events.length, 10);
  });

  it('ships on its own every flushInterval', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 1000, flushInterval: 100 });
    loggerWith(t).info('lonely');
    await r.waitForEvents(1, 5000);
    assert.equal(r.events[0]!.message, 'lonely');
  });

  it('committed() resolves once what was logged is in the queue file; flush() reports delivered and pending', async () => {
    const r = await receiver();
    await r.stop();
    const dbPath = join(tempDir(), 'q.db');
    const t = transport(r.url, { maxRetries: 1, dbPath });
    await new Promise<void>((resolve) => t.log({ level: 'info', message: 'one' }, resolve));
    await t.committed();
    // Read by a connection of its own: the row is in the file, not only the process's.
    const other = await Connection.open(dbPath, 1000, false);
    assert.deepEqual(await other.all('SELECT json_extract(body, "$.message") AS m FROM records'), [{ m: 'one' }]);
    await other.close();
    assert.equal(await t.pendingCount(), 1);
    const failed = await t.flush();
    assert.deepEqual(failed, { delivered: 0, pending: 1 });
    await r.start();
    const ok = await t.flush();
    assert.deepEqual(ok, { delivered: 1, pending: 0 });
  });

  it('sends NDJSON with body: ndjson, accepted by a newline-framed config', async () => {
    const r = await receiver({ decoding: 'json' });
    const t = transport(r.url, { body: 'ndjson', compression: 'none' });
    const logger = loggerWith(t);
    logger.info('a');
    logger.info('b');
    await t.flush();
    assert.deepEqual(messages(r.events), ['a', 'b']);
    assert.equal(r.requests[0]!.headers['content-type'], 'application/x-ndjson');
    assert.equal(r.requests[0]!.headers['content-encoding'], undefined);
  });

  it('the default JSON array body works with the legacy `encoding = "json"` config (bytes framing)', async () => {
    const r = await receiver({ decoding: 'json-bytes' });
    const t = transport(r.url);
    const logger = loggerWith(t);
    for (let i = 0; i < 5; i++) logger.info(`x${i}`);
    await t.flush();
    assert.deepEqual(messages(r.events), ['x0', 'x1', 'x2', 'x3', 'x4']);
    assert.equal(r.requests.filter((q) => q.status === 400).length, 0);
  });

  it('NDJSON against a bytes-framed config: the 400 is bisected down to single records, all delivered', async () => {
    const r = await receiver({ decoding: 'json-bytes' });
    const t = transport(r.url, { body: 'ndjson' });
    const logger = loggerWith(t);
    for (let i = 0; i < 4; i++) logger.info(`n${i}`);
    await t.flush();
    assert.deepEqual(messages(r.events), ['n0', 'n1', 'n2', 'n3']);
    assert.equal((await t.stats()).deadLettered, 0);
  });

  it('a poison record inside a batch is dead-lettered; the others arrive in order', async () => {
    const r = await receiver();
    r.rejectEvents((e) => e.message === 'poison');
    const t = transport(r.url, { batchSize: 100 });
    const logger = loggerWith(t);
    for (let i = 0; i < 100; i++) logger.info(i === 37 ? 'poison' : `ok${i}`);
    const result = await t.flush();
    assert.equal(result.pending, 0);
    const expected = Array.from({ length: 100 }, (_, i) => `ok${i}`).filter((m) => m !== 'ok37');
    assert.deepEqual(messages(r.events), expected);
    const stats = await t.stats();
    assert.equal(stats.deadLettered, 1);
    assert.equal(stats.deadLetters, 1);
    assert.ok(t.warnings.some((w) => w.action === 'dead-letter' && w.status === 400));
  });

  it('413 splits the batch and resends the halves', async () => {
    const r = await receiver({ maxBodyBytes: 2500 });
    const t = transport(r.url, { batchSize: 40, compression: 'none' });
    const logger = loggerWith(t);
    for (let i = 0; i < 40; i++) logger.info(`s${i}`, { pad: 'x'.repeat(50) });
    await t.flush();
    assert.equal(r.events.length, 40);
    assert.deepEqual(messages(r.events), Array.from({ length: 40 }, (_, i) => `s${i}`));
    assert.ok(r.requests.some((q) => q.status === 413));
    assert.equal((await t.stats()).deadLettered, 0);
  });

  it('retries 503 and 429 (honouring Retry-After) and delivers once, in order', async () => {
    const r = await receiver();
    r.script({ status: 503 }, { status: 429, headers: { 'Retry-After': '1' } });
    const t = transport(r.url, { maxRetries: 3, maxRetryDelay: 5000 });
    const logger = loggerWith(t);
    logger.info('r1');
    logger.info('r2');
    const started = Date.now();
    await t.flush();
    const elapsed = Date.now() - started;
    assert.deepEqual(messages(r.events), ['r1', 'r2']);
    assert.deepEqual(r.requests.map((q) => q.status), [503, 429, 200]);
    assert.ok(elapsed >= 900, `Retry-After: 1 was honoured (waited ${elapsed} ms)`);
    assert.equal((await t.stats()).retried, 2);
  });

  it('Retry-After is capped at maxRetryDelay', async () => {
    const r = await receiver();
    r.script({ status: 429, headers: { 'Retry-After': '3600' } });
    const t = transport(r.url, { maxRetryDelay: 50 });
    loggerWith(t).info('capped');
    await t.flush();
    assert.deepEqual(messages(r.events), ['capped']);
  });

  it('a response held past the timeout is retried; nothing is lost', async () => {
    const r = await receiver();
    r.hold();
    const t = transport(r.url, { timeout: 200, maxRetries: 2 });
    loggerWith(t).info('held');
    const first = await t.flush();
    assert.equal(first.pending, 1);
    assert.match(String((await t.stats()).lastError?.message), /timeout/);
    r.release();
    await until(async () => (await t.pendingCount()) === 0 || (await t.flush()).pending === 0, 5000, 'delivery');
    // A held request that the receiver finally accepted may arrive too: at-least-once.
    assert.ok(messages(r.events).includes('held'));
  });

  it('keeps records while the receiver refuses the configuration (401), with one warn per change of state', async () => {
    const r = await receiver({ auth: { username: 'u', password: 'right' } });
    const url = r.url.replace('http://', 'http://u:wrong@');
    const t = transport(url, { maxRetryDelay: 30 });
    const logger = loggerWith(t);
    logger.info('kept');
    for (let i = 0; i < 4; i++) await t.flush();
    assert.equal(await t.pendingCount(), 1);
    const blocked = t.warnings.filter((w) => w.action === 'blocked');
    assert.equal(blocked.length, 1);
    assert.equal(blocked[0]!.status, 401);
    for (const w of t.warnings) {
      assert.doesNotMatch(`${w.message} ${String(w.cause)} ${JSON.stringify(w)}`, /wrong|dTp3cm9uZw/);
    }
    const stats = await t.stats();
    assert.doesNotMatch(JSON.stringify(stats), /wrong/);
    assert.equal(r.events.length, 0);
  });

  it('userinfo in vectorUrl becomes basic auth', async () => {
    const r = await receiver({ auth: { username: 'svc', password: 'p@ss:word' } });
    const t = transport(r.url.replace('http://', 'http://svc:p%40ss%3Aword@'));
    loggerWith(t).info('authed');
    await t.flush();
    assert.deepEqual(messages(r.events), ['authed']);
  });

  it('404, 405, 415 keep the records queued', async () => {
    for (const status of [404, 405, 415, 422, 403]) {
      const r = await receiver();
      r.script({ status, times: 100 });
      const t = transport(r.url);
      loggerWith(t).info('stay');
      const result = await t.flush();
      assert.equal(result.pending, 1, `HTTP ${status}`);
      assert.equal(t.warnings.filter((w) => w.action === 'blocked' && w.status === status).length, 1);
    }
  });

  it('nothing is dropped because retries ran out: after an outage the queue drains', async () => {
    const r = await receiver();
    await r.stop();
    const t = transport(r.url, { maxRetries: 2, batchSize: 5, flushInterval: 50 });
    const logger = loggerWith(t);
    for (let i = 0; i < 20; i++) logger.info(`o${i}`);
    await t.flush();
    await sleep(200);
    assert.equal(await t.pendingCount(), 20);
    assert.equal(t.warnings.filter((w) => w.action === 'retry').length, 1, 'one warn for the whole outage');
    await r.start();
    await r.waitForEvents(20, 10_000);
    assert.deepEqual(messages(r.events), Array.from({ length: 20 }, (_, i) => `o${i}`));
  });

  it('a new transport on the same dbPath ships what the last one left', async () => {
    const r = await receiver();
    await r.stop();
    const dbPath = join(tempDir(), 'q.db');
    const first = transport(r.url, { dbPath, closeTimeout: 0 });
    const logger = loggerWith(first);
    logger.info('left1');
    logger.info('left2');
    await first.close();
    await r.start();
    const second = transport(r.url, { dbPath });
    await r.waitForEvents(2, 5000);
    assert.deepEqual(messages(r.events), ['left1', 'left2']);
    await second.close();
  });

  it('close() is idempotent, ships what is pending, and leaves the rest on disk after closeTimeout', async () => {
    const r = await receiver();
    const t = transport(r.url);
    const logger = loggerWith(t);
    logger.info('bye');
    const a = t.close();
    const b = t.close();
    await Promise.all([a, b]);
    assert.deepEqual(messages(r.events), ['bye']);

    r.hold();
    const dbPath = join(tempDir(), 'q.db');
    const slow = transport(r.url, { dbPath, closeTimeout: 200, timeout: 10_000 });
    loggerWith(slow).info('stays');
    const started = Date.now();
    await slow.close();
    assert.ok(Date.now() - started < 3000, 'close is bounded by closeTimeout');
    r.release();
    const again = transport(r.url, { dbPath });
    assert.equal(await again.pendingCount(), 1);
  });

  it('logger.end() ships and closes the transport before finish', async () => {
    const r = await receiver();
    const t = transport(r.url);
    const logger = loggerWith(t);
    logger.info('ending');
    let transportClosed = false;
    t.once('closed', () => (transportClosed = true));
    await new Promise<void>((resolve) => {
      logger.on('finish', () => resolve());
      logger.end();
    });
    // winston's logger finishes only after its transports did; ours finishes after close().
    assert.ok(transportClosed);
    assert.deepEqual(messages(r.events), ['ending']);
  });

  it('logger.close() closes the transport', async () => {
    const r = await receiver();
    const t = transport(r.url);
    const logger = loggerWith(t);
    logger.info('closing');
    await t.flush();
    const closed = new Promise((resolve) => t.once('closed', resolve));
    logger.close();
    await closed;
    assert.deepEqual(messages(r.events), ['closing']);
  });

  it('await using closes the transport', async () => {
    const r = await receiver();
    {
      await using t = transport(r.url);
      loggerWith(t).info('disposed');
      await t.flush();
    }
    assert.deepEqual(messages(r.events), ['disposed']);
  });

  it("emits 'logged' after commit and honours the transport's level", async () => {
    const r = await receiver();
    const t = transport(r.url, { level: 'warn' });
    const logged: unknown[] = [];
    t.on('logged', (info: { message: unknown }) => logged.push(info.message));
    const logger = loggerWith(t);
    logger.info('too low');
    logger.warn('kept');
    await t.flush();
    assert.deepEqual(logged, ['kept']);
    assert.deepEqual(messages(r.events), ['kept']);
  });

  it("a 'logged' listener that throws does not stop the records after it", async () => {
    const r = await receiver();
    const t = transport(r.url, { highWaterMark: 5 });
    let calls = 0;
    t.on('logged', () => {
      calls++;
      throw new Error('listener bug');
    });
    const logger = loggerWith(t);
    for (let i = 0; i < 40; i++) logger.info(`x${i}`);
    await t.committed();
    assert.equal(await t.pendingCount(), 40);
    assert.ok(calls >= 1);
    await deliveredInOrder(t, r, 'x', 40);
  });

  it('a burst of records is committed in one transaction, and every record is committed', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 1000 });
    const sizes = await commitSizes(t, (logger) => {
      for (let i = 0; i < 2000; i++) logger.info(`burst${i}`);
    });
    assert.deepEqual(sizes, [2000], 'records logged in one go share one commit');
    await deliveredInOrder(t, r, 'burst', 2000);
  });

  it('records written into reused chunks are committed intact, as TEXT, commit after commit', async () => {
    const r = await receiver();
    await r.stop();
    const dbPath = join(tempDir(), 'q.db');
    const t = transport(r.url, { dbPath, maxRetries: 1 });
    const logger = loggerWith(t);
    const expected: string[] = [];
    const log = (message: string) => {
      expected.push(message);
      logger.info(message);
    };
    // Several commits of several chunks each, so later commits write into chunks earlier ones used;
    // one record longer than a chunk (it gets its own) and characters of every UTF-8 length.
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 5000; i++) log(`${round}/${i} ${'é日😀'.repeat(i % 40)}`);
      if (round === 2) log('ж'.repeat(400_000));
      await t.committed();
    }
    const other = await Connection.open(dbPath, 1000, false);
    const rows = await other.all<{ body: string; type: string }>('SELECT body, typeof(body) AS type FROM records ORDER BY id');
    await other.close();
    assert.deepEqual(rows.map((row) => (JSON.parse(row.body) as { message: string }).message), expected);
    assert.deepEqual([...new Set(rows.map((row) => row.type))], ['text']);
  });

  it('records logged while earlier commits wait for the connection (busy shipping) arrive intact', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 50, flushInterval: 10 });
    const logger = loggerWith(t);
    const n = 30_000;
    for (let i = 0; i < n; i++) {
      logger.info(`busy${i}`, { pad: 'é日😀'.repeat(i % 30) });
      // A new commit every 500 records, each taken while the connection claims and acks.
      if (i % 500 === 499) await new Promise((resolve) => setImmediate(resolve));
    }
    await deliveredInOrder(t, r, 'busy', n);
    assert.deepEqual(r.events.map((e) => (e.extra as { pad: string }).pad.length), Array.from({ length: n }, (_, i) => 'é日😀'.length * (i % 30)));
  });

  it('tells the scheduler it is in a burst while 1000 or more records wait for, or are in, a commit', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 100 });
    const logger = loggerWith(t);
    const inBurst = () => t.inBurst();
    for (let i = 0; i < 999; i++) logger.info(`calm${i}`);
    assert.equal(inBurst(), false, '999 waiting');
    logger.info('calm999');
    assert.equal(inBurst(), true, '1000 waiting');
    await new Promise((resolve) => setImmediate(resolve)); // the commit of all 1000 has started
    assert.equal(inBurst(), true, '1000 in the commit under way');
    await t.committed();
    assert.equal(inBurst(), false, 'committed');
    await t.flush();
    await r.waitForEvents(1000);
  });

  it('requests held for a burst go once it is committed, not when the hold of a second from their claim runs out', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 1000 });
    const logger = loggerWith(t);
    // Rounds of a flood (1000 records a turn of the event loop, five turns), no flush(): requests
    // are claimed during each flood and held for it.
    for (let round = 0; round < 3; round++) {
      for (let turn = 0; turn < 5; turn++) {
        for (let i = 0; i < 1000; i++) logger.info(`burst${round}-${turn}-${i}`);
        await new Promise((resolve) => setImmediate(resolve));
      }
      await t.committed();
      const committedAt = Date.now();
      await r.waitForEvents(5000 * (round + 1));
      // Held until the hold ran out, they would come about a second after their claim, during the burst.
      assert.ok(Date.now() - committedAt < 600, `round ${round}: delivered ${Date.now() - committedAt} ms after the commit`);
    }
  });

  it('highWaterMark pushes back on winston: commits stay small, winston buffers the rest, nothing is lost', async () => {
    const r = await receiver();
    const t = transport(r.url, { batchSize: 1000, highWaterMark: 50 });
    const logv = t.logv.bind(t);
    let bursts = 0;
    t.logv = (chunks, callback) => {
      bursts++;
      logv(chunks, callback);
    };
    const sizes = await commitSizes(t, (logger) => {
      for (let i = 0; i < 2000; i++) logger.info(`held${i}`);
    });
    assert.equal(sizes.reduce((a, b) => a + b, 0), 2000);
    // 50 accepted, plus what winston's stream (16 deep) hands over at once when it is let go.
    assert.ok(Math.max(...sizes) <= 50 + 16, `commits of at most ~highWaterMark records (${Math.max(...sizes)})`);
    assert.ok(bursts > 0, "winston buffered records while the transport pushed back (they came through logv)");
    await deliveredInOrder(t, r, 'held', 2000);
  });

  it('a synchronous loop of log calls that the disk keeps up with is never pushed back: chunks are committed while it runs, past 4 × highWaterMark', async () => {
    const { r, t, logger } = await openedWith({ highWaterMark: 500, batchSize: 1000 }); // open: full chunks go to the worker as they fill
    const pad = 'x'.repeat(2000); // ~500 records fill a 1 MiB chunk
    const n = 5000; // ten highWaterMarks, in one loop with no yield: no answer from the worker can be read
    let buffered = 0;
    for (let i = 0; i < n; i++) {
      logger.info(`s${i}`, { pad });
      // A caller that does some work per call (0.2 ms): the worker commits each chunk well before
      // four more fill.
      const end = performance.now() + 0.2;
      while (performance.now() < end);
      buffered = Math.max(buffered, t.writableLength);
    }
    // Bounded by answers (which need the loop to yield), the hand-over would stop after 2000
    // records, and winston would park every info after the next 500 in its stream buffer.
    assert.equal(buffered, 0, 'log() kept calling back: winston buffered no info during the loop');
    await t.flush();
    await r.waitForEvents(n + 1);
    assert.deepEqual(messages(r.events), ['open', ...Array.from({ length: n }, (_, i) => `s${i}`)]);
  });

  it("a logger that writes its next records on 'drain' is pushed back at highWaterMark a turn: the event loop keeps turning while it logs", async () => {
    const hwm = 1000;
    const { r, t, logger } = await openedWith({ highWaterMark: hwm, batchSize: 1000 });
    // Small records first, until winston is pushed back (they stay in one chunk); then ones that
    // fill a 1 MiB chunk every ~250, which go to the worker as they fill: winston is never pushed
    // back by waiting records again. A caller that does some work per call (0.1 ms) lets the
    // worker keep up, so nothing this thread waits for needs the event loop.
    const small = hwm + 100;
    const n = small + 6000;
    const pad = 'x'.repeat(4000);
    let turn = 0;
    let turning = true;
    const next = () => {
      turn++;
      if (turning) setImmediate(next);
    };
    setImmediate(next);
    const perTurn = new Map<number, number>();
    let i = 0;
    await new Promise<void>((done) => {
      // What a service honouring backpressure does: write until write() says false, go on at 'drain'.
      const step = () => {
        for (let k = 0; k < 2000 && i < n; k++) {
          perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
          const record = i < small ? { message: `d${i}` } : { message: `d${i}`, pad };
          const end = performance.now() + (i < small ? 0 : 0.1);
          while (performance.now() < end);
          i++;
          if (!logger.write({ level: 'info', ...record, [Symbol.for('level')]: 'info' } as never)) {
            logger.once('drain', step);
            return;
          }
        }
        if (i < n) setImmediate(step);
        else done();
      };
      step();
    });
    turning = false;
    const most = Math.max(...perTurn.values());
    // highWaterMark, plus what winston's streams (16 deep each) hold when it is let go.
    assert.ok(most <= hwm + 64, `at most ~highWaterMark records a turn (${most} in one, over ${perTurn.size} turns)`);
    await t.flush();
    await r.waitForEvents(n + 1);
    assert.deepEqual(messages(r.events), ['open', ...Array.from({ length: n }, (_, j) => `d${j}`)]);
  });

  for (const listening of [false, true]) {
    it(`a commit that fails is counted (write-failed) and told; committed() resolves and the commits after it go in, in order (${listening ? "with a 'commit' listener" : 'no listener'})`, async () => {
      const r = await receiver();
      const t = transport(r.url, { batchSize: 1000 });
      const warnings: string[] = [];
      t.on('warn', (e: Error) => warnings.push(e.message));
      let told = 0;
      if (listening) t.on('commit', (rows: number) => (told += rows));
      const logger = loggerWith(t);
      logger.info('before');
      await t.committed();
      // A trigger of the worker's own connection makes every commit that carries a "boom" fail.
      await t.queueExec(`CREATE TEMP TRIGGER refuse BEFORE INSERT ON records WHEN NEW.body LIKE '%"message":"boom%' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`);
      // The failing commit, then commits right after it (each from a turn of its own), while it may still be under way.
      logger.info('boom');
      for (let i = 0; i < 3; i++) {
        await new Promise((resolve) => setImmediate(resolve));
        logger.info(`after${i}`);
      }
      await t.committed();
      const failed = (await t.stats()).dropped['write-failed'] ?? 0;
      // 'boom' fails, and with it whatever the worker put in the same transaction.
      assert.ok(failed >= 1 && failed <= 4, `the failed commit is counted (${failed})`);
      assert.ok(warnings.some((w) => /dropped \(write-failed\): .*refused by the test/.test(w)), warnings.join('\n'));
      await t.queueExec('DROP TRIGGER refuse');
      logger.info('last');
      await t.committed();
      if (listening) assert.equal(told, 1 + 4 - failed + 1, "'commit' tells the records committed, not those that failed");
      await t.flush();
      await r.waitForEvents(6 - failed);
      const got = messages(r.events);
      assert.deepEqual(got, ['before', ...['after0', 'after1', 'after2'].slice(failed - 1), 'last'], 'what failed is not delivered; the rest is, in order');
    });
  }

  it('records logged a few at a time wait commitDelay for more and go in one commit; committed() does not wait for the delay', async () => {
    const { r, t, logger, sizes } = await openedWith({ commitDelay: 1000 });
    // One record every 5 ms, each in a turn of its own: with commitDelay 0 each would be a commit.
    for (let i = 0; i < 10; i++) {
      logger.info(`few${i}`);
      await sleep(5);
    }
    assert.deepEqual(sizes, [], 'nothing is committed while fewer than 256 records wait inside commitDelay');
    const started = Date.now();
    await t.committed();
    assert.ok(Date.now() - started < 1000, 'committed() starts the waiting commit at once instead of waiting for commitDelay');
    assert.deepEqual(sizes, [10], 'the ten records went in one commit');
    await t.flush();
    await r.waitForEvents(11);
    assert.deepEqual(messages(r.events), ['open', ...Array.from({ length: 10 }, (_, i) => `few${i}`)]);
  });

  it('flush() and close() do not wait for commitDelay either: what waits is committed and shipped at once', async () => {
    const { r, t, logger, sizes } = await openedWith({ commitDelay: 1000 });
    const started = Date.now();
    logger.info('flushed');
    await t.flush();
    assert.deepEqual(sizes, [1]);
    logger.info('closed');
    await t.close();
    assert.ok(Date.now() - started < 1000, 'neither waited for commitDelay');
    assert.deepEqual(sizes, [1, 1]);
    assert.deepEqual(messages(r.events), ['open', 'flushed', 'closed']);
  });

  it('a service logging a few records a turn: nothing from the worker wakes the event loop for their commits; committed() learns of them without asking', async () => {
    const r = await receiver();
    const t = transport(r.url);
    const logger = loggerWith(t);
    logger.info('open');
    await t.committed();
    const before = t.messagesHeard();
    // Two records a turn, a turn every 10 ms (past commitDelay): a commit each, in the worker.
    for (let i = 0; i < 20; i++) {
      logger.info(`turn${i}a`);
      logger.info(`turn${i}b`);
      await sleep(10);
    }
    await sleep(100);
    await t.committed();
    assert.equal(t.messagesHeard() - before, 0, 'no answer, warning or event came from the worker while the records were committed');
    await t.flush();
    await r.waitForEvents(41);
    assert.deepEqual(messages(r.events), ['open', ...Array.from({ length: 20 }, (_, i) => [`turn${i}a`, `turn${i}b`]).flat()]);
  });

  it('a few records a turn go to the worker through shared memory, not a message a turn; while it waits out commitDelay they do not wake it', async () => {
    const { r, t, logger } = await openedWith({ commitDelay: 100 });
    const before = t.handedOver();
    // Each batch takes a chunk until its commit, and a transport keeps eight: six turns a commit.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 6; i++) {
        logger.info(`turn${round}-${i}a`);
        logger.info(`turn${round}-${i}b`);
        // After the first, the worker has had time to wake and to start waiting out commitDelay
        // (on a loaded machine it could otherwise still be asleep when the next ones come).
        if (i === 0) await sleep(20);
        else await new Promise((resolve) => setImmediate(resolve));
      }
      await t.committed();
    }
    const after = t.handedOver();
    assert.equal(after.message - before.message, 0, 'no batch went as a message');
    assert.ok(after.ring - before.ring >= 6, `${after.ring - before.ring} batches through shared memory`);
    assert.ok(after.unwoken - before.unwoken >= 3, `${after.unwoken - before.unwoken} of them left the worker asleep`);
    await t.flush();
    await r.waitForEvents(37);
    const expected = Array.from({ length: 3 }, (_, round) => Array.from({ length: 6 }, (_, i) => [`turn${round}-${i}a`, `turn${round}-${i}b`]).flat()).flat();
    assert.deepEqual(messages(r.events), ['open', ...expected]);
  });

  it('a batch that goes as a message (a record larger than a chunk) keeps its place among those that go through shared memory', async () => {
    const { r, t, logger } = await openedWith({ commitDelay: 0 });
    const before = t.handedOver();
    const big = 'x'.repeat(400_000); // 1.2 MB at 3 bytes a unit, more than a chunk: a chunk of its own
    const expected: string[] = ['open'];
    for (let i = 0; i < 8; i++) {
      // In one turn: the record after the big one moves the writer on, so `a` and the big one go to
      // the worker at once as a message; `b` goes through shared memory at the end of the turn, and
      // the worker can read it before that message.
      logger.info(`a${i}`);
      logger.info(`big${i}`, { big });
      logger.info(`b${i}`);
      expected.push(`a${i}`, `big${i}`, `b${i}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await t.committed();
    const after = t.handedOver();
    assert.ok(after.message - before.message >= 8, `${after.message - before.message} batches as messages`);
    assert.ok(after.ring - before.ring >= 8, `${after.ring - before.ring} batches through shared memory`);
    await t.flush();
    await r.waitForEvents(expected.length);
    assert.deepEqual(messages(r.events), expected);
    assert.equal((r.events[2]!.extra as { big: string }).big.length, 400_000);
  });

  it("with a 'logged' listener too, committed() does not wait for commitDelay: the record is committed at once and 'logged' told", async () => {
    const { t, logger } = await openedWith({ commitDelay: 1000 });
    const logged: unknown[] = [];
    t.on('logged', (info: { message: unknown }) => logged.push(info.message));
    logger.info('heard');
    // The turn ends: the record is with the worker, waiting commitDelay there.
    await sleep(50);
    assert.deepEqual(logged, [], 'not committed yet: it waits commitDelay in the worker');
    const started = Date.now();
    await t.committed();
    assert.ok(Date.now() - started < 900, `committed() started the waiting commit at once (${Date.now() - started} ms)`);
    assert.deepEqual(logged, ['heard']);
  });

  it('commitDelay counts from the start of the last commit: a record after a quiet spell is committed at once, one right after a commit waits', async () => {
    const { logger, sizes } = await openedWith({ commitDelay: 1000 });
    await sleep(1100);
    logger.info('after a quiet spell');
    await until(() => sizes.length > 0, 600, 'a commit without waiting for commitDelay');
    logger.info('right after');
    await sleep(300);
    assert.deepEqual(sizes, [1], 'the record right after that commit waits for commitDelay');
    await until(() => sizes.length > 1, 2000, 'the waiting record committed once commitDelay passed');
    assert.deepEqual(sizes, [1, 1]);
  });

  it('256 records waiting start their commit at once, whatever commitDelay', async () => {
    const { logger, sizes } = await openedWith({ commitDelay: 1000 });
    const started = Date.now();
    for (let i = 0; i < 300; i++) logger.info(`many${i}`);
    await until(() => sizes.length > 0, 900, 'a commit without waiting for commitDelay');
    assert.ok(Date.now() - started < 1000);
    assert.equal(sizes[0], 300, 'the whole turn in one commit');
  });

  it('records that fill a highWaterMark below 256 do not wait for commitDelay: winston is never held back by it', async () => {
    const { t, logger, sizes } = await openedWith({ commitDelay: 1000, highWaterMark: 10 });
    const committed = () => sizes.reduce((a, b) => a + b, 0);
    const started = Date.now();
    for (let i = 0; i < 30; i++) logger.info(`hwm${i}`);
    // Each highWaterMark that fills goes at once; only the last few (fewer than 10) may wait.
    await until(() => committed() >= 21, 900, 'the records that filled highWaterMark committed without waiting for commitDelay');
    assert.ok(Date.now() - started < 1000);
    await t.committed();
    assert.equal(committed(), 30);
  });

  it('refuses, at construction, an option the delivery worker cannot receive (a function inside tls)', () => {
    const dbPath = join(tempDir(), 'q.db');
    assert.throws(
      () => new VectorTransport({ vectorUrl: 'http://127.0.0.1:9/', project: 'p', table: 't', dbPath, tls: { checkServerIdentity: () => undefined } as never }),
      (err: Error) => err instanceof TypeError && /`tls` must be plain data/.test(err.message),
    );
  });

  it('never keeps the process alive by itself', async () => {
    const { spawnSync } = await import('node:child_process');
    const dir = tempDir();
    const script = `
      const { VectorTransport } = require(${JSON.stringify(join(__dirname, '..', 'dist', 'index.js'))});
      const winston = require('winston');
      const t = new VectorTransport({ vectorUrl: 'http://127.0.0.1:9/', project: 'p', table: 't',
        dbPath: ${JSON.stringify(join(dir, 'q.db'))}, flushInterval: 100, retryDelay: 100 });
      t.on('warn', () => {});
      winston.createLogger({ transports: [t] }).info('x');
    `;
    const started = Date.now();
    const res = spawnSync(process.execPath, ['-e', script], { timeout: 15_000, cwd: join(__dirname, '..') });
    assert.equal(res.status, 0, String(res.stderr));
    assert.ok(Date.now() - started < 10_000);
  });
});

describe('commit seqs in shared memory', () => {
  it('compare modulo 2^32: a seq stays reached after the Int32Array wraps', () => {
    const wrapped = (seq: number) => new Int32Array([seq])[0]!;
    assert.equal(reached(5, 3), true);
    assert.equal(reached(3, 3), true);
    assert.equal(reached(3, 5), false);
    for (const seq of [2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 2 ** 32 + 7]) {
      assert.equal(reached(wrapped(seq), seq), true, `${seq} reached itself`);
      assert.equal(reached(wrapped(seq + 1), seq), true, `${seq + 1} is after ${seq}`);
      assert.equal(reached(wrapped(seq), seq + 1), false, `${seq} is before ${seq + 1}`);
    }
  });
});

describe('a record goes only to the Vector it was logged for', () => {
  it('two services with different vectorUrls share a dbPath: each Vector gets its own records only', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const a = await receiver();
    const b = await receiver();
    await a.stop(); // A's Vector is down: its records wait in the shared file
    const ta = transport(a.url, { dbPath, maxRetries: 1 });
    const tb = transport(b.url, { dbPath });
    const la = winston.createLogger({ transports: [ta] });
    const lb = winston.createLogger({ transports: [tb] });
    for (let i = 0; i < 50; i++) {
      la.info(`A${i}`);
      lb.info(`B${i}`);
    }
    assert.deepEqual(await tb.flush(), { delivered: 50, pending: 0 });
    assert.equal(await ta.pendingCount(), 50);
    assert.deepEqual(b.events.map((e) => e.message), Array.from({ length: 50 }, (_, i) => `B${i}`), "B's Vector never sees A's records");
    await a.start();
    assert.deepEqual(await ta.flush(), { delivered: 50, pending: 0 });
    assert.deepEqual(a.events.map((e) => e.message), Array.from({ length: 50 }, (_, i) => `A${i}`));
  });

  it('records of a file written before destinations were kept ship to whichever transport opens it', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const conn = await Connection.open(dbPath, 1000);
    await conn.exec(`CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, created_at INTEGER NOT NULL,
      lease_owner TEXT, lease_until INTEGER NOT NULL DEFAULT 0, notice_reason TEXT, notice_count INTEGER);
      CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, body TEXT NOT NULL, created_at INTEGER NOT NULL, failed_at INTEGER NOT NULL, status INTEGER, reason TEXT NOT NULL);
      INSERT INTO records (body, created_at) VALUES ('{"message":"old"}', 0);`);
    await conn.close();
    const r = await receiver();
    const t = transport(r.url, { dbPath });
    assert.deepEqual(await t.flush(), { delivered: 1, pending: 0 });
    assert.deepEqual(r.events.map((e) => e.message), ['old']);
  });
});
