import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import winston from 'winston';
import { createVectorLogger, LogLevel, VectorTransport } from '../lib/index';
import { receiver, tempDir } from './support/helpers';

describe('createVectorLogger (LogSend-style API)', () => {
  it('has Python\'s levels, pendingCount(), flush() and close()', async () => {
    const r = await receiver();
    const logger = createVectorLogger({
      vectorUrl: r.url,
      project: 'my-project',
      table: 'application_logs',
      dbPath: join(tempDir(), 'queue.db'),
      batchSize: 100,
      flushInterval: 5000,
      level: LogLevel.DEBUG,
      extraFields: { environment: 'production', version: '1.0.0' },
    });
    logger.debug('Debug message');
    logger.info('User logged in', { user_id: 123, ip: '192.168.1.1' });
    logger.warning('High memory usage', { memory_percent: 85 });
    logger.error('Database connection failed', { host: 'db.example.com' });
    logger.critical('System shutdown required');
    assert.equal(await logger.pendingCount(), 5);
    const result = await logger.flush();
    assert.deepEqual(result, { delivered: 5, pending: 0 });
    await logger.close();
    await logger.close();
    assert.deepEqual(
      r.events.map((e) => [e.level, e.level_num, e.message]),
      [
        ['DEBUG', 10, 'Debug message'],
        ['INFO', 20, 'User logged in'],
        ['WARNING', 30, 'High memory usage'],
        ['ERROR', 40, 'Database connection failed'],
        ['CRITICAL', 50, 'System shutdown required'],
      ],
    );
    assert.equal(r.events[1]!.environment, 'production');
    assert.deepEqual(r.events[1]!.extra, { user_id: 123, ip: '192.168.1.1' });
  });

  it('level filters like Python\'s logger, by number or name', async () => {
    const r = await receiver();
    const logger = createVectorLogger({ vectorUrl: r.url, project: 'p', table: 't', dbPath: join(tempDir(), 'q.db'), level: LogLevel.WARNING });
    logger.info('dropped');
    logger.warning('kept');
    await logger.close();
    assert.deepEqual(r.events.map((e) => e.message), ['kept']);
    assert.throws(() => createVectorLogger({ vectorUrl: r.url, project: 'p', table: 't', level: 15 as never }), /`level` must be a LogLevel.*got 15/);
  });

  it('await using ships at the end of the block (LogSend\'s context manager)', async () => {
    const r = await receiver();
    {
      await using logger = createVectorLogger({ vectorUrl: r.url, project: 'p', table: 't', dbPath: join(tempDir(), 'q.db') });
      logger.info('Application started');
      logger.info('Application finished');
    }
    assert.deepEqual(r.events.map((e) => e.message), ['Application started', 'Application finished']);
  });

  it('standard logging: VectorTransport added to an existing logger', async () => {
    const r = await receiver();
    const handler = new VectorTransport({ vectorUrl: r.url, project: 'p', table: 'app_logs', dbPath: join(tempDir(), 'q.db'), batchSize: 50, flushInterval: 10_000 });
    const logger = winston.createLogger({ level: 'debug' });
    logger.add(handler);
    logger.info('Hello from standard logging!');
    logger.error('Something went wrong', { details: 'error details' });
    await handler.close();
    assert.deepEqual(r.events.map((e) => [e.level, e.message, e.extra]), [
      ['INFO', 'Hello from standard logging!', undefined],
      ['ERROR', 'Something went wrong', { details: 'error details' }],
    ]);
  });

  it("Python's habits: warn, exception with the stack, %s/%d/%j arguments, meta as before", async () => {
    const r = await receiver();
    const logger = createVectorLogger({ vectorUrl: r.url, project: 'p', table: 't', dbPath: join(tempDir(), 'q.db') });
    const err = new Error('disk on fire');
    logger.warn('memory at %d%%', 85, { host: 'a' });
    logger.exception('export of %s failed', 'orders', err);
    logger.exception(err);
    logger.exception('no error given');
    logger.info('user %s has %d items: %j', 'bob', 3, { a: [1] }, { request_id: 'r1' });
    logger.info('plain', { user_id: 1 });
    logger.child({ service: 'billing' }).warn('from a child');
    logger.child({ service: 'billing' }).exception('child failed', err);
    await logger.close();
    const byMessage = new Map(r.events.map((e) => [e.message, e]));
    assert.deepEqual(r.events.map((e) => [e.level, e.message]), [
      ['WARNING', 'memory at 85%'],
      ['ERROR', 'export of orders failed'],
      ['ERROR', 'disk on fire'],
      ['ERROR', 'no error given'],
      ['INFO', 'user bob has 3 items: {"a":[1]}'],
      ['INFO', 'plain'],
      ['WARNING', 'from a child'],
      ['ERROR', 'child failed'],
    ]);
    assert.deepEqual(byMessage.get('memory at 85%')!.extra, { host: 'a' });
    for (const m of ['export of orders failed', 'disk on fire', 'child failed']) {
      assert.equal(byMessage.get(m)!.exception, err.stack, m);
      assert.equal(byMessage.get(m)!.level_num, 40);
    }
    assert.equal(byMessage.get('no error given')!.exception, undefined);
    assert.deepEqual(byMessage.get('user bob has 3 items: {"a":[1]}')!.extra, { request_id: 'r1' });
    assert.deepEqual(byMessage.get('plain')!.extra, { user_id: 1 });
    assert.deepEqual(byMessage.get('from a child')!.extra, { service: 'billing' });
  });

  it('refuses an unknown option with the nearest name; a level the logger lacks is one warn', async () => {
    assert.throws(
      () => createVectorLogger({ vectorUrl: 'http://127.0.0.1:9/', project: 'p', table: 't', batch_size: 10 } as never),
      /unknown createVectorLogger option `batch_size`; did you mean `batchSize`\?/,
    );
    assert.throws(() => createVectorLogger({ vectorUrl: 'http://127.0.0.1:9/', project: 'p', table: 't', default_meta: {} } as never), /did you mean `defaultMeta`\?/);

    const r = await receiver();
    const t = new VectorTransport({ vectorUrl: r.url, project: 'p', table: 't', dbPath: join(tempDir(), 'q.db'), level: 'warn' });
    const warnings: Error[] = [];
    t.on('warn', (w: Error) => warnings.push(w));
    const logger = winston.createLogger({ levels: { critical: 0, error: 1, warning: 2, info: 3 }, transports: [t] });
    logger.log('error', 'dropped by winston');
    logger.log('error', 'dropped too');
    await t.close();
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!.message, /level "warn" is not a level of this logger \(critical, error, warning, info\): winston drops every record/);
    assert.equal(r.events.length, 0);
  });
});
