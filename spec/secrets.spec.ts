/**
 * No secret leaves the process: receivers on 127.0.0.1 that echo the credentials they were sent in
 * their error bodies, and every place such a body could go (warnings, stats, the queue file, the
 * CLI's output).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import winston from 'winston';
import { resolveOptions } from '../lib/winston/options';
import { collectSecrets, describeRefusedUrl } from '../lib/secrets';
import { tempDir, transport } from './support/helpers';

const bin = join(__dirname, '..', 'dist', 'tools', 'cli.js');
const cli = (args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });

/**
 * Answers every request with `status` and a body that echoes what it was sent: the whole
 * Authorization header, the decoded basic-auth pair and password, and the named headers.
 */
async function echoingServer(status: number, headerNames: string[] = []) {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const auth = req.headers.authorization ?? '';
      const [scheme, token = ''] = auth.split(' ');
      const decoded = scheme === 'Basic' ? Buffer.from(token, 'base64').toString() : '';
      const echoed = headerNames.map((h) => `${h}=${String(req.headers[h.toLowerCase()])}`).join(' ');
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ code: status, message: `denied ${auth} (${decoded}) pass=${decoded.split(':')[1] ?? ''} ${echoed} ${encodeURIComponent(decoded)}` }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Every text that can leave the transport, the queue file's bytes and the CLI's output. */
async function everythingSaid(t: ReturnType<typeof transport>, dbPath: string): Promise<string[]> {
  const warned = t.warnings.map((w) => `${w.message} ${String(w.cause)} ${JSON.stringify(w)} ${w.stack}`);
  const stats = JSON.stringify(await t.stats());
  await t.close();
  const files = readdirSync(join(dbPath, '..')).map((f) => readFileSync(join(dbPath, '..', f)).toString('latin1'));
  const status = cli(['status', '--db', dbPath, '--json']);
  const statusText = cli(['status', '--db', dbPath]);
  const dead = cli(['dead-letters', 'list', '--db', dbPath, '--json']);
  assert.equal(status.status, 0, status.stderr);
  return [...warned, stats, ...files, status.stdout, status.stderr, statusText.stdout, dead.stdout, dead.stderr];
}

function assertClean(texts: string[], secrets: string[]): void {
  for (const text of texts) {
    for (const s of secrets) assert.ok(!text.includes(s), `"${s}" leaked into: ${text.slice(Math.max(0, text.indexOf(s) - 100), text.indexOf(s) + 100)}`);
  }
}

describe('no secret leaves the process', () => {
  for (const status of [401, 400, 503]) {
    it(`URL userinfo (a password with / and @) echoed back in a ${status}`, async () => {
      const password = 'p/ss@w:rd-42';
      const server = await echoingServer(status);
      const dbPath = join(tempDir(), 'q.db');
      const url = server.url.replace('http://', `http://svc:${encodeURIComponent(password)}@`);
      const t = transport(url, { dbPath, maxRetries: 1, batchSize: 2 });
      const logger = winston.createLogger({ transports: [t] });
      logger.info('one');
      logger.info('two');
      await t.flush();
      assert.ok(t.warnings.length >= 1, 'the failure was said');
      if (status === 400) assert.equal((await t.stats()).deadLetters, 2, 'both records dead-lettered with the echoed reason');
      const texts = await everythingSaid(t, dbPath);
      assert.ok(texts.some((x) => x.includes('denied')), 'the echoed body did reach the warnings (so redaction was tested)');
      const base64 = Buffer.from(`svc:${password}`).toString('base64');
      assertClean(texts, [password, encodeURIComponent(password), base64, `svc:${password}`]);
      await server.close();
    });
  }

  it('a bearer token and a header named as secret, echoed back in a 401 and a 400', async () => {
    const token = 'tok-9f8e7d6c5b4a';
    const apiKey = 'key-0123456789';
    const custom = 'c-u-s-t-o-m-1';
    for (const status of [401, 400]) {
      const server = await echoingServer(status, ['X-Api-Key', 'X-Tenant-Seal']);
      const dbPath = join(tempDir(), 'q.db');
      const t = transport(server.url, {
        dbPath,
        maxRetries: 1,
        headers: { Authorization: `Bearer ${token}`, 'X-Api-Key': apiKey, 'X-Tenant-Seal': custom },
        secretHeaders: ['x-tenant-seal'],
      });
      winston.createLogger({ transports: [t] }).info('x');
      await t.flush();
      const texts = await everythingSaid(t, dbPath);
      assert.ok(texts.some((x) => x.includes('denied')));
      assertClean(texts, [token, apiKey, custom]);
      await server.close();
    }
  });

  it('a refused URL is never echoed with its userinfo, whatever the password holds', () => {
    for (const url of ['ftp://svc:pa/ss@host/', 'http://svc:pa/ss@host:notaport/', 'svc:pa55word@host']) {
      assert.throws(
        () => resolveOptions({ vectorUrl: url, project: 'p', table: 't' }),
        (err: Error) => err.message.startsWith('`vectorUrl` must be an http(s) URL') && !/pa\/ss|pa55word/.test(err.message),
        url,
      );
    }
    assert.equal(describeRefusedUrl('ftp://a:b/c@host/x'), 'ftp://***@host/x');
    const drain = cli(['drain', '--db', join(tempDir(), 'none.db'), '--url', 'ftp://svc:pa/ss@host/']);
    assert.ok(!`${drain.stdout}${drain.stderr}`.includes('pa/ss'), drain.stderr);
  });

  it('knows every form a secret can be echoed in: raw, percent-encoded, JSON-escaped, base64; and the TLS passphrase', () => {
    const options = resolveOptions({
      vectorUrl: 'https://svc:p%22w%2Fd9@host/',
      project: 'p',
      table: 't',
      tls: { passphrase: 'tls-phrase-1' },
    });
    const s = options.secrets;
    const pair = 'svc:p"w/d9';
    for (const echoed of ['p"w/d9', 'p%22w%2Fd9', JSON.stringify('p"w/d9').slice(1, -1), Buffer.from(pair).toString('base64'), 'tls-phrase-1']) {
      assert.equal(s.redact(`before ${echoed} after`), 'before *** after', echoed);
    }
    assert.equal(s.redact('see http://u:x/y@h/ now'), 'see http://***@h/ now');
    assert.equal(collectSecrets({ headers: { 'X-Trace': 'plain-value' } }).redact('plain-value'), 'plain-value', 'ordinary headers are not secrets');
  });
});
