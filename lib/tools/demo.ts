import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { VectorReceiver } from './receiver';
import { VectorTransport } from '../winston/transport';

/**
 * The one-command demo: a local stand-in for Vector's http_server source, a winston logger with
 * VectorTransport, an outage in the middle, and every record arriving in order. No Vector needed.
 * Returns true when all 9 records arrived.
 */
export async function runDemo(print: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Promise<boolean> {
  const receiver = await new VectorReceiver({ decoding: 'json' }).start();
  receiver.on('events', (events: Array<Record<string, unknown>>) => {
    for (const e of events) print(`  vector <- ${JSON.stringify(e)}`);
  });
  const dir = mkdtempSync(join(tmpdir(), 'winston-vector-demo-'));
  const dbPath = join(dir, 'queue.db');
  print(`Vector stand-in listening on ${receiver.url}; queue file ${dbPath}\n`);

  const transport = new VectorTransport({
    vectorUrl: receiver.url,
    project: 'shop',
    table: 'app_logs',
    dbPath,
    batchSize: 5,
    flushInterval: 500,
    retryDelay: 200,
    maxRetryDelay: 1000,
    extraFields: { environment: 'demo' },
  });
  transport.on('warn', (err: Error) => print(`  transport warn: ${err.message}`));
  const logger = winston.createLogger({ level: 'debug', defaultMeta: { service: 'checkout' }, transports: [transport] });
  try {
    print('[1/3] Logging three records and flushing:');
    logger.info('User logged in', { user_id: 123 });
    logger.warn('Cart is large', { items: 42 });
    logger.error('Payment failed', new Error('card declined'));
    print(`      flush -> ${JSON.stringify(await transport.flush())}`);

    print('\n[2/3] Vector goes down; six more records are committed to SQLite:');
    await receiver.stop();
    for (let i = 1; i <= 6; i++) logger.info('Order placed', { order: i });
    await transport.flush();
    print(`      pending on disk: ${await transport.pendingCount()}`);

    print('\n[3/3] Vector is back; the backlog ships in order:');
    await receiver.start();
    const result = await transport.flush();
    print(`      flush -> ${JSON.stringify(result)}`);

    await transport.close();
    const ok = receiver.received === 9 && result.pending === 0;
    print(`\nDone: ${receiver.received} records received in ${receiver.requests.length} requests, ${ok ? 'nothing lost' : 'SOMETHING IS MISSING'}.`);
    return ok;
  } finally {
    await transport.close();
    await receiver.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
