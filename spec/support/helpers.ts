import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { VectorTransport, type VectorTransportOptions } from '../../lib/index';
import type { VectorDeliveryError } from '../../lib/errors';
import { VectorReceiver, type ReceiverOptions } from './vector-receiver';

/** A fresh temp dir, removed when the spec file ends. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'winston-vector-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A started receiver, stopped when the spec file ends. */
export async function receiver(options?: ReceiverOptions): Promise<VectorReceiver> {
  const r = await new VectorReceiver(options).start();
  after(() => r.stop());
  return r;
}

/** A transport on a temp queue file with quick test timings; closed when the spec file ends. */
export function transport(
  url: string,
  options: Partial<VectorTransportOptions> = {},
): VectorTransport & { warnings: VectorDeliveryError[]; errors: Error[] } {
  const dbPath = options.dbPath ?? join(tempDir(), 'queue.db');
  const t = new VectorTransport({
    vectorUrl: url,
    project: 'shop',
    table: 'app_logs',
    dbPath,
    flushInterval: 60_000,
    retryDelay: 10,
    maxRetryDelay: 50,
    timeout: 2000,
    closeTimeout: 2000,
    ...options,
  }) as VectorTransport & { warnings: VectorDeliveryError[]; errors: Error[] };
  t.warnings = [];
  t.errors = [];
  t.on('warn', (err: VectorDeliveryError) => t.warnings.push(err));
  t.on('error', (err: Error) => t.errors.push(err));
  after(() => t.close());
  return t;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 10 ms until it is true, or throws after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
