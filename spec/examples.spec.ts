/** Every file in examples/ runs (or, for Vector and ClickHouse configs, is checked) as the README says. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseToml } from 'smol-toml';
import winston from 'winston';
import { type Decoding } from '../lib/tools/receiver';
import { receiver, tempDir, transport, until } from './support/helpers';

const examples = join(__dirname, '..', 'examples');

function run(file: string, env: Record<string, string>) {
  const child = spawn(process.execPath, [join(examples, file)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const io = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (io.stdout += d));
  child.stderr.on('data', (d: Buffer) => (io.stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  void exited.then(() => clearTimeout(timer));
  return { child, io, exited };
}

describe('examples', () => {
  it('express-service.mjs logs each request and ships everything on SIGTERM', async () => {
    const r = await receiver();
    const app = run('express-service.mjs', { PORT: '0', VECTOR_URL: r.url, QUEUE_DB: join(tempDir(), 'q.db') });
    await until(() => /listening on (\S+)/.test(app.io.stdout), 20_000, 'the service');
    const base = /listening on (\S+)/.exec(app.io.stdout)![1]!;
    assert.equal((await fetch(`${base}/orders/7`)).status, 200);
    assert.equal((await fetch(`${base}/fail`)).status, 500);
    app.child.kill('SIGTERM');
    assert.equal(await app.exited, 0, app.io.stderr);
    assert.match(app.io.stdout, /stopped/);
    const got = r.events.map((e) => [e.message, (e.extra as Record<string, unknown> | undefined)?.path, (e.extra as Record<string, unknown> | undefined)?.status]);
    assert.deepEqual(got, [
      ['request', '/orders/7', 200],
      ['request failed', '/fail', undefined],
      ['request', '/fail', 500],
      ['shutting down', undefined, undefined],
    ]);
    assert.match(String(r.events[1]!.exception), /^Error: something broke/);
    assert.equal(r.events[0]!.service, 'shop-api');
  });

  it('cluster.mjs: workers share one queue file; every record arrives once', async () => {
    const r = await receiver();
    const job = run('cluster.mjs', { WORKERS: '3', RECORDS: '300', VECTOR_URL: r.url, QUEUE_DB: join(tempDir(), 'q.db') });
    assert.equal(await job.exited, 0, job.io.stderr);
    assert.match(job.io.stdout, /all 3 workers done/);
    await r.waitForEvents(900, 20_000);
    const keys = r.events.map((e) => `${e.worker}:${(e.extra as { item: number }).item}`);
    assert.equal(keys.length, 900);
    assert.equal(new Set(keys).size, 900, 'no duplicates');
  });

  it('short-lived-job.mjs: flush with a deadline; what is left ships at the next run', async () => {
    const queue = join(tempDir(), 'q.db');
    // The same Vector, down and then up again on its port: records are kept for their destination.
    const r = await receiver();
    await r.stop();
    const started = Date.now();
    const down = run('short-lived-job.mjs', { VECTOR_URL: r.url, DEADLINE_MS: '1500', QUEUE_DB: queue });
    assert.equal(await down.exited, 0, down.io.stderr);
    assert.ok(Date.now() - started < 10_000, 'the deadline bounds the exit');
    assert.match(down.io.stdout, /^nothing delivered in \d+ ms( \(.*ECONNREFUSED.*\))?; 27 records left for the next run/);

    await r.start();
    const up = run('short-lived-job.mjs', { VECTOR_URL: r.url, DEADLINE_MS: '5000', QUEUE_DB: queue });
    assert.equal(await up.exited, 0, up.io.stderr);
    assert.match(up.io.stdout, /^delivered 54 records in \d+ ms; 0 records left for the next run/);
    assert.equal(r.events.length, 54, 'the 27 left by the first run, then the 27 of this one');
  });

  describe('Vector and ClickHouse configs', () => {
    /** What our stand-in receiver does for a source config (what Vector's source does with each config). */
    function decodingOf(source: Record<string, any>): Decoding {
      assert.equal(source.type, 'http_server');
      assert.equal(source.encoding, undefined, 'no legacy `encoding` option');
      if (source.decoding?.codec !== 'json') return 'bytes';
      return source.framing?.method === 'bytes' ? 'json-bytes' : 'json';
    }

    for (const file of ['vector.toml', 'vector-clickhouse.toml']) {
      it(`${file}: its source accepts both body formats`, async () => {
        const config = parseToml(readFileSync(join(examples, file), 'utf8')) as Record<string, any>;
        const decoding = decodingOf(config.sources.logs_in);
        assert.equal(decoding, 'json');
        for (const body of ['json', 'ndjson'] as const) {
          const r = await receiver({ decoding, path: config.sources.logs_in.path });
          const t = transport(r.url, { body });
          const logger = winston.createLogger({ transports: [t] });
          logger.info('a', { n: 1 });
          logger.info('b');
          await t.flush();
          assert.deepEqual(r.events.map((e) => e.message), ['a', 'b'], `${file}, ${body}`);
        }
      });
    }

    it('vector-clickhouse.toml routes by project/table, with acknowledgements', () => {
      const sink = (parseToml(readFileSync(join(examples, 'vector-clickhouse.toml'), 'utf8')) as Record<string, any>).sinks.clickhouse;
      assert.equal(sink.type, 'clickhouse');
      assert.deepEqual(sink.inputs, ['logs_in']);
      assert.equal(sink.database, '{{ project }}');
      assert.equal(sink.table, '{{ table }}');
      assert.equal(sink.dangerously_allow_unconfined_template_resolution, true);
      assert.equal(sink.acknowledgements.enabled, true);
      assert.ok(sink.buffer.max_size >= 268435488);
    });

    it('clickhouse-schema.sql has a column for every field of the record', async () => {
      const sql = readFileSync(join(examples, 'clickhouse-schema.sql'), 'utf8');
      const columns = new Map([...sql.matchAll(/^\s+`(\w+)`\s+([^\n,]+)/gm)].map((m) => [m[1]!, m[2]!.trim()]));
      const r = await receiver();
      const t = transport(r.url, { project: 'shop', table: 'app_logs', extraFields: { environment: 'prod', version: '1.0.0' } });
      winston.createLogger({ transports: [t] }).error('boom', { user_id: 1, err: new Error('x') });
      await t.flush();
      for (const field of Object.keys(r.events[0]!)) assert.ok(columns.has(field), `a column for \`${field}\``);
      assert.match(columns.get('timestamp')!, /^DateTime64\(3/);
      assert.match(columns.get('level_num')!, /^UInt8/);
      assert.match(sql, /CREATE TABLE IF NOT EXISTS shop\.app_logs/);
    });
  });
});
