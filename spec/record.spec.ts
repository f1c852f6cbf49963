/**
 * The record contract (docs/record-format.md), rule by rule. Records go through a real winston logger into the
 * transport, are committed to SQLite and shipped to the Vector stand-in; what it received is checked.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import winston from 'winston';
import { LevelTable } from '../lib/winston/levels';
import { buildRecord, extraCareful, extraWide, type RecordContext } from '../lib/winston/record';
import { MAX_DEPTH } from '../lib/winston/serialize';
import { receiver, transport } from './support/helpers';
import type { VectorTransportOptions } from '../lib/index';

type Rec = Record<string, any>;

/** Logs through winston and returns the records as the receiver decoded them. */
async function roundTrip(
  log: (logger: winston.Logger) => void,
  options: Partial<VectorTransportOptions> = {},
  loggerOptions: winston.LoggerOptions = {},
): Promise<Rec[]> {
  const r = await receiver();
  const t = transport(r.url, options);
  const logger = winston.createLogger({ level: 'silly', ...loggerOptions, transports: [t] });
  log(logger);
  const { pending } = await t.flush();
  assert.equal(pending, 0);
  return r.events.map(({ source_type, path, ...rest }) => rest);
}

const ctx = (over: Partial<RecordContext> = {}): RecordContext => ({
  project: 'p',
  table: 't',
  extraFields: {},
  idField: undefined,
  maxRecordBytes: 1024 * 1024,
  levels: new LevelTable(undefined, {}),
  ...over,
});

describe('record format', () => {
  it('the example record of record-format.md, field for field', async () => {
    const [rec] = await roundTrip(
      (l) => l.info('User logged in', { user_id: 123, ip: '192.168.1.1' }),
      { project: 'my-project', table: 'application_logs', extraFields: { environment: 'production', version: '1.0.0' } },
    );
    assert.deepEqual(Object.keys(rec!), ['timestamp', 'level', 'level_num', 'message', 'project', 'table', 'extra', 'environment', 'version']);
    assert.match(rec!.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual({ ...rec, timestamp: 'T' }, {
      timestamp: 'T',
      level: 'INFO',
      level_num: 20,
      message: 'User logged in',
      project: 'my-project',
      table: 'application_logs',
      extra: { user_id: 123, ip: '192.168.1.1' },
      environment: 'production',
      version: '1.0.0',
    });
  });

  it('timestamp: the time of logging, or info.timestamp from a format when it parses', async () => {
    const before = Date.now();
    const recs = await roundTrip(
      (l) => {
        l.info('no format');
        l.info('explicit', { timestamp: '2024-01-15T10:30:00.123Z' });
        l.info('unparseable', { timestamp: 'yesterday-ish' });
      },
    );
    const t0 = Date.parse(recs[0]!.timestamp);
    assert.ok(t0 >= before - 5 && t0 <= Date.now());
    assert.equal(recs[1]!.timestamp, '2024-01-15T10:30:00.123Z');
    assert.ok(Date.parse(recs[2]!.timestamp) >= before - 5);
    assert.equal(recs[1]!.extra, undefined, 'timestamp is not repeated in extra');

    const [formatted] = await roundTrip((l) => l.info('fmt'), {}, { format: winston.format.timestamp() });
    assert.match(formatted!.timestamp, /Z$/);
    assert.ok(Date.parse(formatted!.timestamp) >= before - 5);
  });

  it('level and level_num: Python names and numbers', async () => {
    const recs = await roundTrip((l) => {
      l.error('e');
      l.warn('w');
      l.info('i');
      l.http('h');
      l.verbose('v');
      l.debug('d');
      l.silly('s');
    });
    assert.deepEqual(recs.map((r) => [r.level, r.level_num]), [
      ['ERROR', 40], ['WARNING', 30], ['INFO', 20], ['HTTP', 15], ['VERBOSE', 13], ['DEBUG', 10], ['SILLY', 5],
    ]);
    const syslog = await roundTrip((l) => (l as any).crit('c'), {}, { levels: winston.config.syslog.levels, level: 'debug' });
    assert.deepEqual([syslog[0]!.level, syslog[0]!.level_num], ['CRITICAL', 50]);
    const custom = await roundTrip((l) => (l as any).trace('t'), { levelNumbers: { trace: 5 } }, { levels: { fatal: 0, trace: 1 }, level: 'trace' });
    assert.deepEqual([custom[0]!.level, custom[0]!.level_num], ['TRACE', 5]);
  });

  it('message: always a string; objects as JSON, never [object Object]', async () => {
    const recs = await roundTrip((l) => {
      l.info({ a: 1, nested: { b: [1, 2] } } as never);
      l.log('info', 42 as never);
      l.log('info', null as never);
      l.log({ level: 'info', message: ['x', 1] as never });
    });
    assert.equal(recs[0]!.message, '{"a":1,"nested":{"b":[1,2]}}');
    assert.equal(recs[1]!.message, '42');
    assert.equal(recs[2]!.message, 'null');
    assert.equal(recs[3]!.message, '["x",1]');
    for (const r of recs) assert.equal(typeof r.message, 'string');
  });

  it('extra: meta, defaultMeta and child meta; left out when empty; no symbols', async () => {
    const recs = await roundTrip(
      (l) => {
        l.info('plain');
        l.child({ request_id: 'r1' }).info('child', { k: 1 });
      },
      {},
      { defaultMeta: { service: 'api' } },
    );
    assert.deepEqual(recs[0]!.extra, { service: 'api' });
    assert.deepEqual(recs[1]!.extra, { service: 'api', request_id: 'r1', k: 1 });
    const [bare] = await roundTrip((l) => l.info('bare'));
    assert.equal('extra' in bare!, false);
    assert.equal('exception' in bare!, false);
  });

  it('exception: logger.error(err), logger.error(msg, err), an Error in the meta, winston\'s stack field', async () => {
    const err = Object.assign(new Error('db down'), { code: 'ECONNREFUSED' });
    const recs = await roundTrip(
      (l) => {
        l.error(err);
        l.error('query failed', err);
        l.warn('with meta', { error: new TypeError('bad type') });
        l.error('fmt', { stack: 'Error: custom\n    at here' });
      },
    );
    assert.equal(recs[0]!.message, 'db down');
    assert.equal(recs[0]!.exception, err.stack);
    assert.deepEqual(recs[0]!.extra, { code: 'ECONNREFUSED' });
    assert.equal(recs[1]!.message, 'query failed db down');
    assert.equal(recs[1]!.exception, err.stack);
    assert.match(recs[2]!.exception, /^TypeError: bad type\n/);
    assert.equal(recs[2]!.extra.error.name, 'TypeError');
    assert.equal(recs[2]!.extra.error.message, 'bad type');
    assert.equal(recs[3]!.exception, 'Error: custom\n    at here');
    const [withFormat] = await roundTrip((l) => l.error(new Error('fmt errors')), {}, { format: winston.format.errors({ stack: true }) });
    assert.match(withFormat!.exception, /^Error: fmt errors\n/);
  });

  it('Errors anywhere keep name, message, stack, own properties, cause and AggregateError.errors', () => {
    const root = new RangeError('root');
    const err = new Error('outer', { cause: root });
    (err as any).status = 503;
    const agg = new AggregateError([new Error('a'), 'b'], 'many');
    const rec = JSON.parse(buildRecord({ level: 'info', message: 'm', nested: { err }, agg }, ctx()));
    const e = rec.extra.nested.err;
    assert.equal(e.name, 'Error');
    assert.equal(e.message, 'outer');
    assert.equal(e.stack, err.stack);
    assert.equal(e.status, 503);
    assert.deepEqual([e.cause.name, e.cause.message, e.cause.stack], ['RangeError', 'root', root.stack]);
    assert.equal(rec.extra.agg.name, 'AggregateError');
    assert.equal(rec.extra.agg.errors[0].message, 'a');
    assert.equal(rec.extra.agg.errors[1], 'b');
  });

  it('values JSON cannot hold', () => {
    const sym = Symbol('s');
    const rec = JSON.parse(
      buildRecord(
        {
          level: 'info',
          message: 'm',
          date: new Date('2024-01-15T10:30:00.123Z'),
          badDate: new Date('nope'),
          big: 12345678901234567890n,
          buf: Buffer.from('hi'),
          u8: new Uint8Array([1, 2, 3]),
          map: new Map<unknown, unknown>([['a', 1], [2, 'b']]),
          set: new Set([1, 'x']),
          undef: undefined,
          fn: () => 1,
          sym,
          nan: Number.NaN,
          inf: Number.POSITIVE_INFINITY,
          arr: [undefined, () => 1, 1],
          [Symbol('hidden')]: 1,
        },
        ctx(),
      ),
    );
    assert.deepEqual(rec.extra, {
      date: '2024-01-15T10:30:00.123Z',
      badDate: null,
      big: '12345678901234567890',
      buf: 'aGk=',
      u8: 'AQID',
      map: { a: 1, 2: 'b' },
      set: [1, 'x'],
      nan: null,
      inf: null,
      arr: [null, null, 1],
    });
  });

  it('circular references and deep nesting', () => {
    const a: any = { name: 'a' };
    a.self = a;
    a.list = [a];
    const shared = { s: 1 };
    let deep: any = { leaf: true };
    for (let i = 0; i < MAX_DEPTH + 5; i++) deep = { d: deep };
    const rec = JSON.parse(buildRecord({ level: 'info', message: 'm', a, twice: [shared, shared], deep }, ctx()));
    assert.equal(rec.extra.a.self, '[Circular]');
    assert.equal(rec.extra.a.list[0], '[Circular]');
    assert.deepEqual(rec.extra.twice, [{ s: 1 }, { s: 1 }], 'a repeated (not circular) object is written twice');
    let node = rec.extra.deep;
    let depth = 1;
    while (typeof node === 'object') {
      node = node.d;
      depth++;
    }
    assert.equal(node, '[Object]');
    assert.equal(depth, MAX_DEPTH);
  });

  it('hostile values never throw: throwing getters, Proxies, null prototypes, revoked proxies', () => {
    const getter = Object.defineProperty({}, 'boom', { enumerable: true, get() { throw new Error('getter'); } });
    const proxy = new Proxy({}, { ownKeys() { throw new Error('trap'); } });
    const { proxy: revoked, revoke } = Proxy.revocable({}, {});
    revoke();
    const nullProto = Object.assign(Object.create(null), { x: 1 });
    const infoGetter = Object.defineProperty({ level: 'info' }, 'message', { enumerable: true, get() { throw new Error('msg'); } });
    const rec = JSON.parse(buildRecord({ level: 'info', message: nullProto, getter, proxy, revoked, nullProto }, ctx()));
    assert.equal(rec.message, '{"x":1}');
    assert.equal(rec.extra.getter.boom, '[Unserializable: getter]');
    assert.equal(rec.extra.proxy, '[Unserializable: trap]');
    assert.match(rec.extra.revoked, /^\[Unserializable/);
    assert.deepEqual(rec.extra.nullProto, { x: 1 });
    assert.match(JSON.parse(buildRecord(infoGetter, ctx())).message, /Unserializable: msg/);
  });

  it('a record over maxRecordBytes is cut, marked and still delivered', async () => {
    const huge = 'x'.repeat(300_000);
    const recs = await roundTrip(
      (l) => {
        l.info(huge, { big: huge, small: 'kept', list: Array.from({ length: 1000 }, (_, i) => i) });
        l.info('after');
      },
      { maxRecordBytes: 64 * 1024 },
    );
    const text = JSON.stringify(recs[0]);
    assert.ok(Buffer.byteLength(text) <= 64 * 1024 + 200, `${Buffer.byteLength(text)} bytes`);
    assert.equal(recs[0]!.extra._truncated, true);
    assert.equal(recs[0]!.extra.small, 'kept');
    assert.match(recs[0]!.message, /^x+…\[truncated\]$/);
    assert.equal(recs[1]!.message, 'after');
    assert.equal(recs[1]!.extra, undefined);
  });

  it('truncation is linear: 8,000 keys in 1.5 MiB, 100k keys, 10k-deep nesting come back cut and valid', () => {
    // The timings are measured by bench/record.ts; here only the results are asserted.
    const wide: Record<string, string> = {};
    for (let i = 0; i < 8000; i++) wide[`k${i}`] = 'v'.repeat(190);
    const many: Record<string, number> = {};
    for (let i = 0; i < 100_000; i++) many[`key${i}`] = i;
    let deep: Record<string, unknown> = {};
    const root = deep;
    for (let i = 0; i < 10_000; i++) deep = (deep.a = {}) as Record<string, unknown>;
    for (const [name, info] of [
      ['wide', { level: 'info', message: 'm', ...wide }],
      ['many', { level: 'info', message: 'm', ...many }],
      ['nested many', { level: 'info', message: 'm', many }],
      ['deep', { level: 'info', message: 'm', root }],
    ] as const) {
      const text = buildRecord(info as Record<string, unknown>, ctx());
      assert.ok(Buffer.byteLength(text) <= 1024 * 1024, `${name}: ${Buffer.byteLength(text)} bytes`);
      const rec = JSON.parse(text);
      assert.equal(rec.message, 'm', name);
      if (name !== 'deep') assert.equal(rec.extra._truncated, true, name);
    }
  });

  it('extra written entry by entry (many keys) or from a copy (the rest): both write the same text', () => {
    class Point {
      constructor(public x: number, public y: number) {}
    }
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < MAX_DEPTH + 2; i++) deep = { down: deep, list: [deep] };
    const shared = { s: 1 };
    const err = Object.assign(new TypeError('bad', { cause: new Error('root') }), { code: 'E1' });
    const values: Record<string, unknown> = {
      s: 'text "quoted" \\ \n', n: 1.5, nan: Number.NaN, inf: -Infinity, t: true, nul: null, undef: undefined,
      fn: () => 1, sym: Symbol('s'), big: 12345678901234567890n, date: new Date(0), bad: new Date(Number.NaN),
      buf: Buffer.from('hi'), u8: new Uint8Array([1, 2]), ab: new ArrayBuffer(2), map: new Map<unknown, unknown>([['a', 1], [2, new Set([3])]]),
      set: new Set(['x', 1n]), err, point: new Point(1, 2), json: { toJSON: () => ({ replaced: new Map([['k', 1n]]) }) },
      boxed: new String('b'), nullProto: Object.assign(Object.create(null), { k: 'v' }), deep,
      arr: [1, undefined, () => 1, Symbol('x'), new Date(0), [2n], { a: undefined }], sharedA: shared, sharedB: [shared, shared],
      ['__proto__']: { p: 1 }, 10: 'integer key first', [Symbol('hidden')]: 'no',
      level: 'info', message: 'own fields are not extra', stack: 'own too', timestamp: 't',
    };
    const info = Object.defineProperty(values, '__proto__', { value: { p: 1 }, enumerable: true });
    const cyclic: Record<string, unknown> = { a: 1, list: [] };
    cyclic.self = cyclic;
    (cyclic.list as unknown[]).push(cyclic, { up: cyclic });
    const hostile = {
      getter: Object.defineProperty({ ok: 1 }, 'boom', { enumerable: true, get() { throw new Error('getter'); } }),
      proxy: new Proxy({}, { ownKeys() { throw new Error('trap'); } }),
      revoked: (() => { const r = Proxy.revocable({}, {}); r.revoke(); return r.proxy; })(),
      cyclic,
      toJSON: () => 'an info of its own toJSON',
      sparse: [1, , 3], // eslint-disable-line no-sparse-arrays
      arrayToJSON: Object.assign([1, 2], { toJSON: () => 'an array that asks to be written differently' }),
      escapes: { 'k"ey': 'a\u0001b', '\u2028': 'ok', 'é': 'ü😀' },
    };
    const samples = { all: info, hostile, plain: { a: 1, b: [1, { c: 'd' }] }, empty: { level: 'info', message: 'm' } };
    for (const [name, sample] of Object.entries(samples)) {
      const keys = Object.keys(sample);
      const wide = extraWide(sample as Record<string, unknown>, keys);
      const careful = extraCareful(sample as Record<string, unknown>, keys)!;
      assert.equal(wide.text, careful.text, name);
      assert.equal(wide.firstError, careful.firstError, name);
    }
    const h = JSON.parse(extraWide(hostile, Object.keys(hostile)).text!);
    assert.equal(h.getter.boom, '[Unserializable: getter]');
    assert.equal(h.proxy, '[Unserializable: trap]');
    assert.deepEqual(h.cyclic, { a: 1, list: ['[Circular]', { up: '[Circular]' }], self: '[Circular]' });
    assert.deepEqual(h.sparse, [1, null, 3]);
    // Values too large to check first (over 1,000 members): the record is written entry by entry.
    const big = Object.fromEntries(Array.from({ length: 1500 }, (_, i) => [`m${i}`, i % 3 ? `v${i}` : { i, d: new Date(i) }]));
    for (const meta of [{ big, after: 1 }, { small: { a: [1, 2] }, big, list: Array.from({ length: 1500 }, (_, i) => i) }]) {
      const full = { level: 'info', message: 'm', ...meta };
      assert.deepEqual(JSON.parse(buildRecord(full, ctx())).extra, JSON.parse(extraCareful(full)!.text!), Object.keys(meta).join());
    }
    assert.equal(extraWide(info, Object.keys(info)).firstError, err);
    const rec = JSON.parse(extraWide(info, Object.keys(info)).text!);
    assert.equal(rec.big, '12345678901234567890');
    assert.equal(rec.buf, 'aGk=');
    assert.deepEqual(rec.json, { replaced: { k: '1' } });
    assert.equal(Object.keys(rec)[0], '10');
    assert.equal(rec.level, undefined);
  });

  it('truncation keeps a prefix of the keys, cuts what is large, and never exceeds the bound, for any text', () => {
    const max = 16 * 1024;
    const many = (n: number, value: (i: number) => unknown) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, value(i)]));
    const cases: Array<[string, Record<string, unknown>]> = [
      ['small ascii values', many(5000, (i) => `v${i}`)],
      ['non-ascii keys and values', Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`ключ${i}`, `значение 😀 ${i}`]))],
      ['escapes', many(3000, () => 'a"b\\c\n\u0001')],
      ['a huge value after many small ones', { ...many(2000, (i) => i), huge: 'x'.repeat(200_000) }],
      ['a huge nested object', { nested: many(20_000, (i) => ({ i, s: 'é"' })) }],
      ['a huge array', { list: Array.from({ length: 20_000 }, (_, i) => [i, 'y']) }],
      ['a caller\'s own _truncated', { _truncated: 'theirs', ...many(5000, (i) => i) }],
      ['lone surrogates', many(3000, () => 'a\ud800b')],
    ];
    for (const [name, meta] of cases) {
      const text = buildRecord({ level: 'info', message: 'm', ...meta }, ctx({ maxRecordBytes: max }));
      assert.ok(Buffer.byteLength(text) <= max, `${name}: ${Buffer.byteLength(text)} bytes`);
      assert.ok(Buffer.byteLength(text) > max * 0.75, `${name}: fills the bound (${Buffer.byteLength(text)} bytes)`);
      assert.ok(!text.includes('\\ud8'), `${name}: no lone surrogate escape`);
      const rec = JSON.parse(text);
      assert.equal(rec.message, 'm', name);
      assert.equal(rec.extra._truncated, true, name);
      const keys = Object.keys(rec.extra).filter((k) => k !== '_truncated');
      const source = Object.keys(meta).filter((k) => k !== '_truncated');
      assert.deepEqual(keys, source.slice(0, keys.length), `${name}: a prefix of the keys`);
      for (const k of keys) {
        const original = meta[k];
        const got = rec.extra[k];
        if (typeof got === 'string' && got.endsWith('…[truncated]')) {
          const whole = typeof original === 'string' ? original.toWellFormed() : JSON.stringify(original);
          assert.ok(whole.startsWith(got.slice(0, -'…[truncated]'.length)), `${name}: ${k} is cut from its start`);
        } else {
          assert.deepEqual(got, JSON.parse(JSON.stringify(original).replaceAll('\\ud800', '\\ufffd')), `${name}: ${k} kept whole`);
        }
      }
    }
  });

  it('truncation never splits a surrogate pair or a UTF-8 sequence', () => {
    for (const unit of ['😀', 'é', '中', 'a😀']) {
      for (let max = 1024; max < 1100; max++) {
        const text = buildRecord({ level: 'info', message: unit.repeat(2000) }, ctx({ maxRecordBytes: max }));
        const rec = JSON.parse(text);
        assert.ok(rec.message.isWellFormed(), `${unit} at ${max}`);
        assert.ok(!text.includes('\\ud'), `${unit} at ${max}: no escaped lone surrogate`);
        assert.ok(Buffer.byteLength(text) <= max, `${unit} at ${max}: ${Buffer.byteLength(text)} bytes`);
        assert.ok(rec.message.endsWith('…[truncated]'));
      }
    }
  });

  it('lone surrogates anywhere become U+FFFD: the body is valid for a strict parser, and the stand-in takes it', async () => {
    const lone = 'a\ud800b';
    const err = new Error(`bad ${lone}`);
    const recs = await roundTrip(
      (l) => {
        l.info(`msg ${lone}`, { [`key${lone}`]: `value ${lone}`, nested: { list: [`x\udc00`] }, err });
        l.info('pair 😀 kept', { ok: '\\ud800 stays text' });
      },
      { extraFields: { tag: `t${lone}` } },
    );
    assert.equal(recs.length, 2, 'accepted by the stand-in, which answers 400 to lone surrogate escapes');
    const [a, b] = recs;
    assert.equal(a!.message, 'msg a\ufffdb');
    assert.equal(a!.extra['keya\ufffdb'], 'value a\ufffdb');
    assert.deepEqual(a!.extra.nested, { list: ['x\ufffd'] });
    assert.match(a!.exception, /^Error: bad a\ufffdb/);
    assert.equal(a!.tag, 'ta\ufffdb');
    assert.equal(b!.message, 'pair 😀 kept');
    assert.equal(b!.extra.ok, '\\ud800 stays text');
  });

  it('idField: a unique id per record, stable across resends', async () => {
    const r = await receiver();
    r.script({ status: 503 });
    const t = transport(r.url, { idField: 'event_id' });
    const logger = winston.createLogger({ transports: [t] });
    logger.info('a');
    logger.info('b');
    await t.flush();
    const ids = r.events.map((e) => e.event_id as string);
    assert.equal(new Set(ids).size, 2);
    assert.equal(r.requests[0]!.status, 503);
    assert.deepEqual(r.requests[0]!.decoded.map((e) => e.event_id), ids, 'the resend carries the same ids');
    for (const id of ids) assert.match(id, /^[0-9a-f-]{36}$/);
    const [plain] = await roundTrip((l) => l.info('no id'));
    assert.equal('event_id' in plain!, false);
  });

  it('extraFields are normalized once and written on every record', async () => {
    const recs = await roundTrip((l) => {
      l.info('1');
      l.info('2');
    }, { extraFields: { region: 'eu', started: new Date('2024-01-01T00:00:00Z'), n: 10n } as never });
    for (const r of recs) {
      assert.equal(r.region, 'eu');
      assert.equal(r.started, '2024-01-01T00:00:00.000Z');
      assert.equal(r.n, '10');
    }
  });
});
