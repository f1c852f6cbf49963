/**
 * Delivery against receivers that misbehave: real HTTP servers on 127.0.0.1 whose 2xx bodies lie,
 * that close the socket before answering, and the Vector stand-in's own strictness.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { describe, it } from 'node:test';
import winston from 'winston';
import { HttpShipper } from '../lib/delivery/shipper';
import { receiver, transport } from './support/helpers';

const log250 = (t: ReturnType<typeof transport>) => {
  const logger = winston.createLogger({ transports: [t] });
  for (let i = 0; i < 250; i++) logger.info(`r${i}`);
};

/** A raw server on 127.0.0.1:0; `handle` gets each request after its body was read. */
async function rawServer(handle: (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void) {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handle(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return {
    url,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a 2xx is delivered, whatever its body', () => {
  const cases: Array<{ name: string; status: number; headers?: Record<string, string>; body: string | Buffer }> = [
    { name: '200, Content-Encoding gzip, a body that is not gzip', status: 200, headers: { 'Content-Encoding': 'gzip' }, body: 'this is not gzip' },
    { name: '200 with a 2 MiB body', status: 200, body: 'x'.repeat(2 * 1024 * 1024) },
    { name: '202, Content-Encoding br, garbage', status: 202, headers: { 'Content-Encoding': 'br' }, body: Buffer.from('this is not brotli, not at all. '.repeat(64)) },
    { name: '200 that says it is JSON but is not', status: 200, headers: { 'Content-Type': 'application/json' }, body: '{not json' },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const r = await receiver();
      r.script({ status: c.status, headers: c.headers, body: c.body as string, times: Infinity });
      const t = transport(r.url, { batchSize: 100 });
      log250(t);
      const result = await t.flush();
      assert.deepEqual(result, { delivered: 250, pending: 0 });
      assert.equal(r.requests.length, 3, 'each batch sent once');
      assert.equal(r.received, 250);
      assert.deepEqual(t.warnings.map((w) => w.message), []);
      assert.equal((await t.stats()).lastError, null);
    });
  }

  it('keeps the connection for the next request after draining a 2xx body', async () => {
    const sockets = new Set<unknown>();
    const server = await rawServer((req, res) => {
      sockets.add(req.socket);
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('y'.repeat(300_000));
    });
    const t = transport(server.url, { batchSize: 100 });
    log250(t);
    assert.deepEqual(await t.flush(), { delivered: 250, pending: 0 });
    assert.equal(sockets.size, 1, 'one keep-alive connection for the three requests');
    await t.close();
    await server.close();
  });
});

describe('a non-2xx body is read only for its message', () => {
  it('a gzip error body is read as far as a few KiB go; a huge one is cut', async () => {
    const big = gzipSync(`{"code":503,"message":"${'busy '.repeat(200_000)}"}`);
    const server = await rawServer((_req, res) => {
      res.writeHead(503, { 'Content-Encoding': 'gzip', 'Content-Type': 'application/json' });
      res.end(big);
    });
    const shipper = new HttpShipper({ url: server.url, authorization: undefined, headers: {}, timeout: 2000, body: 'json', compression: 'none' });
    const result = await shipper.send(['{"a":1}']);
    assert.equal(result.action, 'retry');
    assert.equal(result.status, 503);
    assert.match(result.detail!, /^HTTP 503: \{"code":503,"message":"busy busy/);
    assert.ok(result.detail!.length <= 520, `detail is short (${result.detail!.length})`);
    shipper.close();
    await server.close();
  });
});

describe('requests that get no answer', () => {
  it('a socket closed before the answer: records resent, counted, and a warning says they may arrive twice', async () => {
    let requests = 0;
    const accepted: unknown[] = [];
    const server = await rawServer((_req, res, body) => {
      requests++;
      accepted.push(...(JSON.parse(body.toString()) as unknown[]));
      // Every other request is accepted and then the connection closes without an answer.
      if (requests % 2 === 1) res.socket?.destroy();
      else {
        res.writeHead(200);
        res.end();
      }
    });
    const t = transport(server.url, { batchSize: 100, compression: 'none', maxRetries: 3 });
    const logger = winston.createLogger({ transports: [t] });
    for (let i = 0; i < 1000; i++) logger.info(`r${i}`);
    const result = await t.flush();
    assert.deepEqual(result, { delivered: 1000, pending: 0 });
    const stats = await t.stats();
    assert.equal(stats.unanswered, 10, 'one unanswered request per batch');
    assert.equal(accepted.length, 2000, 'each batch arrived twice');
    const warn = t.warnings.find((w) => w.action === 'unanswered');
    assert.ok(warn, `a warning about it (got ${t.warnings.map((w) => w.message).join(' | ')})`);
    assert.match(warn.message, /got no answer.*may have arrived twice.*idField/);
    await t.close();
    await server.close();
  });

  it('connection refused is not counted as unanswered: nothing can have arrived', async () => {
    const t = transport('http://127.0.0.1:9/', { maxRetries: 2 });
    winston.createLogger({ transports: [t] }).info('x');
    assert.deepEqual(await t.flush(), { delivered: 0, pending: 1 });
    assert.equal((await t.stats()).unanswered, 0);
    assert.equal(t.warnings.filter((w) => w.action === 'unanswered').length, 0);
  });
});

describe('the Vector stand-in is as strict as Vector', () => {
  const post = (url: string, body: string | Buffer, path = '/') =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const u = new URL(path, url);
      const req = http.request(u, { method: 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });

  it('strict_path by default: 404 on another path', async () => {
    const r = await receiver();
    assert.equal((await post(r.url, '{"a":1}', '/other')).status, 404);
    assert.equal((await post(r.url, '{"a":1}', '/')).status, 200);
    const loose = await receiver({ strictPath: false });
    assert.equal((await post(loose.url, '{"a":1}', '/other')).status, 200);
  });

  it('400 for a lone surrogate escape, in a value or a key, as serde_json; a pair is fine', async () => {
    const r = await receiver();
    assert.equal((await post(r.url, '[{"message":"a\\ud800b"}]')).status, 400);
    assert.equal((await post(r.url, '[{"message":"\\udc00"}]')).status, 400);
    assert.equal((await post(r.url, '{"extra":{"k\\ud83d":1}}')).status, 400);
    const bad = await post(r.url, '[{"message":"ok"},{"message":"\\ud800"}]');
    assert.match(bad.body, /surrogate/);
    assert.equal((await post(r.url, '[{"message":"\\ud83d\\ude00"}]')).status, 200);
    assert.equal((await post(r.url, '[{"message":"\\\\ud800 is text"}]')).status, 200, 'an escaped backslash is no escape');
    assert.equal(r.received, 2);
  });

  it('400 for a body that is not UTF-8; 413 over the size cap; 415 and 422 for encodings', async () => {
    const r = await receiver({ maxBodyBytes: 1000 });
    assert.equal((await post(r.url, Buffer.from([0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d]))).status, 400);
    assert.equal((await post(r.url, `["${'x'.repeat(2000)}"]`)).status, 413);
    const encoded = (encoding: string, body: Buffer) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(r.url, { method: 'POST', headers: { 'Content-Encoding': encoding } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(body);
      });
    assert.equal(await encoded('br', Buffer.from('[]')), 415);
    assert.equal(await encoded('gzip', Buffer.from('not gzip')), 422);
  });
});
