/**
 * Lose nothing on the ways processes really end: real child processes (spec/support/exit-child.cjs)
 * that log and then exit, crash, reject, run dry or get a signal, right after logging; a fresh
 * transport on the same file then ships what they left, in order.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { receiver, tempDir, transport, until } from './support/helpers';
import type { VectorReceiver } from './support/vector-receiver';

const child = join(__dirname, 'support', 'exit-child.cjs');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** ms from the fault to the child's 'exit' listener, as it measured. */
  exitMs: number | undefined;
  /** The slow-native hook's marker files when the child's 'exit' listener ran (after the transport's). */
  markers: string[] | undefined;
}

/** Settings of spec/support/slow-native.cjs, preloaded into the child (and its worker) when given. */
interface Slow {
  dir: string;
  load?: string;
  callback?: boolean;
  ms: number;
}

function run(cfg: Record<string, unknown>, onLogged?: (kill: (s: NodeJS.Signals) => void) => void, slow?: Slow): Promise<Run> {
  return new Promise((resolve) => {
    const args = slow ? ['--require', join(__dirname, 'support', 'slow-native.cjs'), child] : [child];
    const env = { ...process.env, WV_EXIT: JSON.stringify(cfg), ...(slow ? { WV_SLOW: JSON.stringify(slow) } : {}) };
    const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d));
    proc.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('logged')) onLogged?.((s) => proc.kill(s));
    });
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      const m = /^exit \S+ (\d+)$/m.exec(stderr);
      const markers = /^markers (.*)$/m.exec(stderr)?.[1];
      resolve({ code, signal, stderr, exitMs: m ? Number(m[1]) : undefined, markers: markers === undefined ? undefined : markers.split(',').filter(Boolean) });
    });
  });
}

/** Ships what `dbPath` holds with a fresh transport; returns the messages in arrival order and its stats. */
async function shipLeftovers(r: VectorReceiver, dbPath: string) {
  // The children logged for a Vector that was down (port 9): ship that destination's backlog here.
  const t = transport(r.url, { dbPath, batchSize: 1000, destination: 'http://127.0.0.1:9/' });
  await until(async () => (await t.flush()).pending === 0, 20_000, 'the queue to drain');
  const stats = await t.stats();
  await t.close();
  return { messages: r.events.map((e) => String(e.message)), stats };
}

const expected = (n: number) => Array.from({ length: n }, (_, i) => `m${i}`);

describe('exit paths: what was accepted is kept', () => {
  // 30,000 records in one synchronous loop: more than `highWaterMark`, so some still wait in
  // winston's own stream buffers when the process ends.
  for (const [how, count] of [['exit', 30_000], ['throw', 2000], ['reject', 2000], ['dry', 2000]] as const) {
    it(`${how === 'dry' ? 'the loop running dry' : how === 'exit' ? 'process.exit() in the same tick' : how === 'throw' ? 'an uncaught exception a tick later' : 'an unhandled rejection a tick later'}: all ${count} ship later, in order`, async () => {
      const dbPath = join(tempDir(), 'q.db');
      const res = await run({ dbPaths: [dbPath], url: 'http://127.0.0.1:9/', count, how });
      // Its own exit code: not a signal (SIGKILL from the 30 s bound, SIGABRT from a thread torn down under native code).
      assert.deepEqual([res.code, res.signal], [how === 'exit' ? 3 : how === 'dry' ? 0 : 1, null], res.stderr);
      const r = await receiver();
      const { messages, stats } = await shipLeftovers(r, dbPath);
      assert.deepEqual(messages, expected(count));
      if (how !== 'dry') assert.ok(stats.restored > 0, 'some came from the exit spill');
      assert.deepEqual(readdirSync(join(dbPath, '..')).filter((f) => f.includes('.spill-')), [], 'spill files are gone once committed');
    });
  }

  it('process.exit() right after a synchronous loop in a running service (the file open, chunks handed over during the loop): all 30,000 ship later, in order, none twice', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const res = await run({ dbPaths: [dbPath], url: 'http://127.0.0.1:9/', count: 30_000, how: 'exit', warm: true });
    assert.equal(res.code, 3, res.stderr);
    const r = await receiver();
    const { messages, stats } = await shipLeftovers(r, dbPath);
    assert.deepEqual(messages, ['warm', ...expected(30_000)]);
    assert.ok(stats.restored > 0, 'the last records came from the exit spill');
  });

  for (const how of ['dry', 'throw'] as const) {
    it(`${how === 'dry' ? 'the loop running dry' : 'an uncaught exception a tick later'} while a few records wait commitDelay for more (its timer keeps no process alive): they are written out and ship later, in order`, async () => {
      const dbPath = join(tempDir(), 'q.db');
      const res = await run({ dbPaths: [dbPath], url: 'http://127.0.0.1:9/', count: 3, how, warm: true, options: { commitDelay: 1000 } });
      assert.deepEqual([res.code, res.signal], [how === 'dry' ? 0 : 1, null], res.stderr);
      assert.ok(res.exitMs !== undefined && res.exitMs < 1000, `the process ended without waiting for commitDelay (${res.exitMs} ms)`);
      const r = await receiver();
      const { messages, stats } = await shipLeftovers(r, dbPath);
      assert.deepEqual(messages, ['warm', ...expected(3)]);
      assert.ok(stats.restored > 0, 'the waiting records came from the exit spill');
    });
  }

  it('kill -9 after a long synchronous loop, before any yield: the records of every chunk filled during the loop were committed meanwhile', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const res = await run({ dbPaths: [dbPath], url: 'http://127.0.0.1:9/', count: 30_000, how: 'kill9', warm: true });
    assert.equal(res.signal, 'SIGKILL');
    const r = await receiver();
    const { messages, stats } = await shipLeftovers(r, dbPath);
    assert.equal(stats.restored, 0, 'no exit listener ran: nothing came from a spill');
    assert.equal(messages[0], 'warm');
    const kept = messages.slice(1);
    assert.deepEqual(kept, expected(kept.length), 'a prefix of the loop, in order');
    // ~6,000 of these records fill a chunk: all but the last, partial one went to the worker as the
    // loop went on (a commit only after the loop would have kept none of them).
    assert.ok(kept.length >= 18_000, `${kept.length} of the loop's 30,000 records were committed during it`);
  });

  it('several transports in one process all write theirs out', async () => {
    const dir = tempDir();
    const dbPaths = [join(dir, 'a.db'), join(dir, 'b.db')];
    const res = await run({ dbPaths, url: 'http://127.0.0.1:9/', count: 500, how: 'exit' });
    assert.deepEqual([res.code, res.signal], [3, null], res.stderr);
    for (const dbPath of dbPaths) {
      const r = await receiver();
      assert.deepEqual((await shipLeftovers(r, dbPath)).messages, expected(500));
    }
  });

  it('SIGTERM with the two README lines installed: nothing lost', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const res = await run({ dbPaths: [dbPath], url: 'http://127.0.0.1:9/', count: 20_000, how: 'signal' }, (kill) => kill('SIGTERM'));
    assert.deepEqual([res.code, res.signal], [143, null], res.stderr);
    const r = await receiver();
    assert.deepEqual((await shipLeftovers(r, dbPath)).messages, expected(20_000));
  });

  // The delivery worker is torn down when the process exits. Node aborts the process (SIGABRT, not
  // its exit code) if that happens while the worker loads an ES module through require() (p-retry),
  // node-sqlite3 if it happens while its addon loads or while its native code is still running
  // after a statement's callback. spec/support/slow-native.cjs holds the worker at each of these
  // points, and the child exits right then: the exit must wait for the worker to be past it.
  for (const load of ['p-retry', 'sqlite3'] as const) {
    it(`process.exit() while the delivery worker loads ${load}: the exit waits for the load, the process ends with its own code, nothing lost`, async () => {
      const dbPath = join(tempDir(), 'q.db');
      const slow: Slow = { dir: tempDir(), load, ms: 300 };
      const res = await run({ dbPaths: [dbPath], url: 'http://127.0.0.1:9/', count: 200, how: 'exit-in-load' }, undefined, slow);
      assert.deepEqual([res.code, res.signal], [3, null], res.stderr);
      assert.deepEqual(res.markers, ['load-end', 'load-start'], 'the load had ended when the exit went on');
      const r = await receiver();
      assert.deepEqual((await shipLeftovers(r, dbPath)).messages, expected(200));
    });
  }

  it('process.exit() while node-sqlite3 is still in native code after a statement\'s callback: the exit waits until it returned, the process ends with its own code, nothing lost', async () => {
    const dbPath = join(tempDir(), 'q.db');
    const slow: Slow = { dir: tempDir(), callback: true, ms: 300 };
    const res = await run({ dbPaths: [dbPath], url: 'http://127.0.0.1:9/', count: 200, how: 'exit-in-callback', warm: true }, undefined, slow);
    assert.deepEqual([res.code, res.signal], [3, null], res.stderr);
    assert.ok(res.markers?.includes('callback-end'), `the native code had returned when the exit went on (${res.markers?.join(',')})`);
    const r = await receiver();
    assert.deepEqual((await shipLeftovers(r, dbPath)).messages, ['warm', ...expected(200)]);
  });

  for (const how of ['winston-exception', 'winston-rejection'] as const) {
    it(`winston's ${how === 'winston-exception' ? 'exception' : 'rejection'} handler: the records and the crash record reach a live receiver before the exit, well inside winston's 3 s`, async () => {
      const r = await receiver();
      const dbPath = join(tempDir(), 'q.db');
      const res = await run({ dbPaths: [dbPath], url: r.url, count: 200, how });
      assert.equal(res.code, 1, res.stderr);
      const messages = r.events.map((e) => String(e.message));
      assert.deepEqual(messages.slice(0, 200), expected(200), 'delivered before the process was gone');
      assert.equal(messages.length, 201);
      assert.match(messages[200]!, how === 'winston-exception' ? /^uncaughtException: crash after logging/ : /^unhandledRejection: rejected after logging/);
      assert.ok(res.exitMs !== undefined && res.exitMs < 2500, `exited ${res.exitMs} ms after the fault`);
    });
  }
});
