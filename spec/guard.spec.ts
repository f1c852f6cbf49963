/**
 * Nothing a caller logs throws: through createVectorLogger, through guardLogger on a plain winston
 * logger (its default json() format included), and through the README's transport example for
 * everything that reaches the transport. The records still arrive at the Vector stand-in.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import winston from 'winston';
import { createVectorLogger, guardLogger } from '../lib/index';
import { receiver, tempDir, transport } from './support/helpers';
import { join } from 'node:path';

type Rec = Record<string, any>;

function hostile(): Array<[string, (l: any) => void]> {
  let deep: Record<string, unknown> = {};
  const root = deep;
  for (let i = 0; i < 10_000; i++) deep = (deep.a = {}) as Record<string, unknown>;
  const getter = () => Object.defineProperty({}, 'g', { enumerable: true, get() { throw new Error('getter boom'); } });
  const revocable = Proxy.revocable({}, {});
  revocable.revoke();
  return [
    ['a throwing getter at the top level of meta', (l) => l.info('top getter', getter())],
    ['a throwing getter nested in meta', (l) => l.info('nested getter', { v: getter() })],
    ['a throwing toJSON', (l) => l.info('toJSON', { v: { toJSON() { throw new Error('toJSON boom'); } } })],
    ['10k-deep nesting', (l) => l.info('deep', { root })],
    ['an info whose message getter throws', (l) => l.info(Object.defineProperty({}, 'message', { enumerable: true, get() { throw new Error('m'); } }))],
    ['a revoked proxy as meta', (l) => l.info('revoked', revocable.proxy)],
    ['through a child logger', (l) => l.child({ request: 1 }).info('child getter', getter())],
    ['through log()', (l) => l.log('info', 'log getter', getter())],
  ];
}

describe('nothing a caller logs throws', () => {
  it('through createVectorLogger: every hostile call is logged, with the rest of its record', async () => {
    const r = await receiver();
    const logger = createVectorLogger({ vectorUrl: r.url, project: 'p', table: 't', dbPath: join(tempDir(), 'q.db'), flushInterval: 60_000 });
    const cases = hostile();
    for (const [name, call] of cases) assert.doesNotThrow(() => call(logger), name);
    logger.info('after');
    assert.deepEqual(await logger.flush(), { delivered: cases.length + 1, pending: 0 });
    await logger.close();
    const byMessage = new Map(r.events.map((e) => [e.message, e as Rec]));
    assert.equal(byMessage.get('after')!.level, 'INFO');
    const top = byMessage.get('top getter')!;
    assert.match(top.extra.g, /^\[Unserializable: getter boom\]$/);
    assert.match(top.extra.log_call_error, /getter boom/);
    assert.equal(byMessage.get('child getter')!.extra.request, 1, 'child meta kept');
  });

  it('guardLogger makes a plain winston logger (default json() format) absorb them too', async () => {
    const r = await receiver();
    const t = transport(r.url);
    const plain = winston.createLogger({ transports: [t] });
    const cases = hostile();
    // Without the guard, winston itself throws for these before any transport sees the record.
    const throwing = cases.filter(([, call]) => {
      try {
        call(plain);
        return false;
      } catch {
        return true;
      }
    });
    assert.ok(throwing.length >= 5, `plain winston throws for ${throwing.map(([n]) => n).join(', ')}`);
    const guarded = guardLogger(winston.createLogger({ transports: [t] }));
    for (const [name, call] of cases) assert.doesNotThrow(() => call(guarded), name);
    const { pending } = await t.flush();
    assert.equal(pending, 0);
    const messages = r.events.map((e) => e.message);
    for (const m of ['top getter', 'nested getter', 'toJSON', 'deep', 'revoked', 'child getter', 'log getter']) {
      assert.ok(messages.includes(m), `${m} arrived (${messages.join(', ')})`);
    }
    assert.deepEqual(t.errors, []);
  });

  it("the README's transport example: a transport format that throws drops that record, counted, and the others go", async () => {
    const r = await receiver();
    const format = winston.format((info) => {
      if (info.message === 'bad') throw new Error('format boom');
      return info;
    })();
    const t = transport(r.url, { format });
    const logger = winston.createLogger({ format: winston.format((i) => i)(), transports: [t] });
    assert.doesNotThrow(() => logger.info('bad'));
    assert.doesNotThrow(() => logger.info('x', { v: { toJSON() { throw new Error('boom'); } }, deep: { a: { b: { c: {} } } } }));
    logger.info('good');
    assert.deepEqual(await t.flush(), { delivered: 2, pending: 0 });
    assert.deepEqual(r.events.map((e) => e.message), ['x', 'good']);
    assert.equal((await t.stats()).dropped['format-error'], 1);
    assert.match(t.warnings.map((w) => w.message).join('\n'), /dropped \(format-error\): format boom/);
  });
});
