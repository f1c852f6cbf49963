import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolveOptions, type VectorTransportOptions } from '../lib/winston/options';

const base: VectorTransportOptions = { vectorUrl: 'http://localhost:8080', project: 'p', table: 't' };

describe('options', () => {
  it('fills the documented defaults and freezes the result', () => {
    const o = resolveOptions(base);
    assert.equal(o.dbPath, './logs/queue.db');
    assert.equal(o.batchSize, 100);
    assert.equal(o.flushInterval, 5000);
    assert.equal(o.maxRetries, 3);
    assert.equal(o.retryDelay, 1000);
    assert.equal(o.maxRetryDelay, 30_000);
    assert.equal(o.timeout, 10_000);
    assert.equal(o.body, 'json');
    assert.equal(o.compression, 'gzip');
    assert.equal(o.closeTimeout, 5000);
    assert.equal(o.maxRecordBytes, 1024 * 1024);
    assert.equal(o.synchronous, 'normal');
    assert.equal(o.highWaterMark, 16_384);
    assert.equal(o.commitDelay, 5);
    assert.equal(o.maxQueueBytes, 256 * 1024 * 1024);
    assert.equal(o.overflow, 'drop-oldest');
    assert.equal(o.maxDeadLetters, 10_000);
    assert.equal(o.leaseTimeout, 3 * (10_000 + 30_000) + 60_000);
    assert.equal(o.idField, undefined);
    assert.ok(Object.isFrozen(o));
  });

  const bad: Array<[Partial<VectorTransportOptions> & Record<string, unknown>, RegExp]> = [
    [{ vectorUrl: 'ftp://x' }, /`vectorUrl` must be an http\(s\) URL, got "ftp:\/\/x\/"/],
    [{ vectorUrl: 'not a url' }, /`vectorUrl`.*"not a url"/],
    [{ vectorUrl: undefined }, /`vectorUrl`.*undefined/],
    [{ project: '' }, /`project` must be a non-empty string, got ""/],
    [{ table: 42 as never }, /`table` must be a non-empty string, got 42/],
    [{ batchSize: 0 }, /`batchSize` must be an integer ≥ 1, got 0/],
    [{ batchSize: 1.5 }, /`batchSize` must be an integer ≥ 1, got 1.5/],
    [{ flushInterval: -1 }, /`flushInterval`.*got -1/],
    [{ maxRetries: 0 }, /`maxRetries`.*got 0/],
    [{ retryDelay: Number.NaN }, /`retryDelay`.*got null/],
    [{ timeout: '10' as never }, /`timeout`.*got "10"/],
    [{ body: 'xml' as never }, /`body` must be one of 'json', 'ndjson', got "xml"/],
    [{ compression: 'br' as never }, /`compression` must be one of 'gzip', 'none', got "br"/],
    [{ extraFields: { level: 'x' } }, /`extraFields` key "level" collides with a record field/],
    [{ extraFields: { extra: 1 } }, /`extraFields` key "extra" collides/],
    [{ extraFields: [] as never }, /`extraFields` must be an object/],
    [{ headers: { 'X-A': 1 as never } }, /`headers` value of "X-A" must be a string, got 1/],
    [{ levelNumbers: { fatal: 'high' as never } }, /`levelNumbers` value of "fatal" must be a finite number/],
    [{ idField: 'message' }, /`idField` must not be a record field, got "message"/],
    [{ idField: 'event_id', extraFields: { event_id: 1 } }, /`extraFields` key "event_id" collides/],
    [{ maxRetryDelay: 10, retryDelay: 100 }, /`maxRetryDelay` must be ≥ `retryDelay` \(100\), got 10/],
    [{ synchronous: 'off' as never }, /`synchronous` must be one of 'normal', 'full', got "off"/],
    [{ highWaterMark: 0 }, /`highWaterMark` must be an integer ≥ 1, got 0/],
    [{ commitDelay: -1 }, /`commitDelay` must be an integer ≥ 0, got -1/],
    [{ commitDelay: 2.5 }, /`commitDelay` must be an integer ≥ 0, got 2.5/],
    [{ commitDelay: 5000 }, /`commitDelay` must be at most 1000, got 5000/],
    [{ maxQueueBytes: 1000 }, /`maxQueueBytes` must be an integer ≥ 65536, got 1000/],
    [{ overflow: 'drop-all' as never }, /`overflow` must be one of 'drop-oldest', 'drop-newest', got "drop-all"/],
  ];
  for (const [override, message] of bad) {
    it(`refuses ${JSON.stringify(override)}`, () => {
      assert.throws(() => resolveOptions({ ...base, ...override } as VectorTransportOptions), message);
    });
  }

  it('moves URL userinfo into a basic Authorization header and out of the URL', () => {
    const o = resolveOptions({ ...base, vectorUrl: 'https://user:s%40cret@vector.local:8443/logs' });
    assert.equal(o.url, 'https://vector.local:8443/logs');
    assert.equal(o.authorization, `Basic ${Buffer.from('user:s@cret').toString('base64')}`);
  });

  it('never shows credentials in an error about the URL', () => {
    assert.throws(
      () => resolveOptions({ ...base, vectorUrl: 'ftp://user:hunter2@host/' }),
      (err: Error) => !err.message.includes('hunter2'),
    );
    assert.throws(
      () => resolveOptions({ ...base, vectorUrl: 'http://user:hunter2@[bad' }),
      (err: Error) => !err.message.includes('hunter2'),
    );
  });

  it('refuses an unknown key with the nearest valid name, LogSend\'s snake_case included', () => {
    const cases: Array<[string, RegExp]> = [
      ['batch_size', /unknown VectorTransport option `batch_size`; did you mean `batchSize`\?/],
      ['vector_url', /did you mean `vectorUrl`\?/],
      ['db_path', /did you mean `dbPath`\?/],
      ['flush_interval', /did you mean `flushInterval` \(in milliseconds; LogSend took seconds\)\?/],
      ['retry_delay', /did you mean `retryDelay` \(in milliseconds/],
      ['max_retries', /did you mean `maxRetries`\?/],
      ['extra_fields', /did you mean `extraFields`\?/],
      ['batchsize', /did you mean `batchSize`\?/],
      ['timout', /did you mean `timeout`\?/],
      ['levle', /did you mean `level`\?/],
      ['url', /did you mean `vectorUrl`\?/],
      ['frobnicate', /unknown VectorTransport option `frobnicate`; the options are listed in README, Options/],
    ];
    for (const [key, message] of cases) {
      assert.throws(() => resolveOptions({ ...base, [key]: 1 } as VectorTransportOptions), (err: Error) => err instanceof TypeError && message.test(err.message), key);
    }
    // Every documented key is accepted (undefined: the default).
    for (const key of ['dbPath', 'destination', 'batchSize', 'level', 'format', 'silent', 'handleExceptions', 'handleRejections', 'leaseTimeout']) {
      assert.doesNotThrow(() => resolveOptions({ ...base, [key]: undefined }), key);
    }
  });
});
