/**
 * Nothing is silent by default: with no 'warn' listener outside the package, each change of
 * delivery state reaches stderr once, through process.emitWarning. Real child processes, since
 * what is checked is what a person sees on stderr.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from './support/helpers';

const dist = join(__dirname, '..', 'dist');

/** A service whose Vector is down for two rounds, then back: how its stderr reads. */
function service(listen: 'none' | 'transport' | 'logger', nodeArgs: string[] = []): Promise<{ code: number | null; stderr: string }> {
  const script = `
    const winston = require('winston');
    const { VectorTransport } = require(${JSON.stringify(join(dist, 'index.js'))});
    const { VectorReceiver } = require(${JSON.stringify(join(dist, 'tools', 'receiver.js'))});
    (async () => {
      const r = await new VectorReceiver().start();
      await r.stop();
      const t = new VectorTransport({ vectorUrl: r.url, project: 'p', table: 't', dbPath: ${JSON.stringify(join(tempDir(), 'q.db'))},
        retryDelay: 10, maxRetryDelay: 20, maxRetries: 2, flushInterval: 60000 });
      const logger = winston.createLogger({ transports: [t] });
      if (${JSON.stringify(listen)} === 'transport') t.on('warn', () => {});
      if (${JSON.stringify(listen)} === 'logger') logger.on('warn', () => {});
      for (let round = 0; round < 3; round++) { logger.info('down ' + round); await t.flush(); }
      await r.start(Number(new URL(r.url).port));
      logger.info('up');
      const result = await t.flush();
      await t.close();
      await r.stop();
      console.log(JSON.stringify({ result, received: r.received }));
    })();`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeArgs, '-e', script], { cwd: join(__dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      // The backoff may have shipped some before the flush: what counts is that all 4 arrived.
      const out = JSON.parse(stdout) as { result: { pending: number }; received: number };
      assert.deepEqual([out.result.pending, out.received], [0, 4], stderr);
      resolve({ code, stderr });
    });
  });
}

const count = (text: string, re: RegExp) => text.split('\n').filter((l) => re.test(l)).length;

describe('warnings reach a person when nobody listens', () => {
  it('unheard: the failure once (not once per round), then that delivery resumed, on stderr', async () => {
    const { code, stderr } = await service('none');
    assert.equal(code, 0, stderr);
    assert.equal(count(stderr, /\[WINSTON_VECTOR_RETRY\] VectorTransportWarning: delivery failed \(records kept, will retry\): .*ECONNREFUSED/), 1, stderr);
    assert.match(stderr, /listen for 'warn' on the transport or the logger/);
    assert.equal(count(stderr, /\[WINSTON_VECTOR_RESUMED\] VectorTransportWarning: delivery resumed: records reach http:\/\/127\.0\.0\.1:\d+\/ again/), 1, stderr);
  });

  it('silent on stderr when the transport or the logger has a listener, or under --no-warnings', async () => {
    for (const [listen, args] of [['transport', []], ['logger', []], ['none', ['--no-warnings']]] as const) {
      const { code, stderr } = await service(listen, [...args]);
      assert.equal(code, 0, stderr);
      assert.doesNotMatch(stderr, /VectorTransportWarning/, `${listen} ${args.join(' ')}`);
    }
  });
});
