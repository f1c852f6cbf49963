/**
 * The one-command demo (`npm run demo`): a local stand-in for Vector's http_server source, a winston
 * logger with VectorTransport, an outage in the middle, and every record arriving in order.
 * No Vector needed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { VectorReceiver } from '../spec/support/vector-receiver';
import { VectorTransport } from '../lib/index';

async function main(): Promise<void> {
  const receiver = await new VectorReceiver({ decoding: 'json' }).start();
  receiver.on('events', (events: Array<Record<string, unknown>>) => {
    for (const e of events) console.log(`  vector <- ${JSON.stringify(e)}`);
  });
  const dir = mkdtempSync(join(tmpdir(), 'winston-vector-demo-'));
  const dbPath = join(dir, 'queue.db');
  console.log(`Vector stand-in listening on ${receiver.url}; queue file ${dbPath}\n`);

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
  transport.on('warn', (err: Error) => console.log(`  transport warn: ${err.message}`));
  const logger = winston.createLogger({ level: 'debug', defaultMeta: { service: 'checkout' }, transports: [transport] });

  console.log('1. Logging three records and flushing:');
  logger.info('User logged in', { user_id: 123 });
  logger.warn('Cart is large', { items: 42 });
  logger.error('Payment failed', new Error('card declined'));
  console.log(`   flush ->`, await transport.flush());

  console.log('\n2. Vector goes down; six more records are committed to SQLite:');
  await receiver.stop();
  for (let i = 1; i <= 6; i++) logger.info(`Order placed`, { order: i });
  await transport.flush();
  console.log(`   pending on disk: ${await transport.pendingCount()}`);

  console.log('\n3. Vector is back; the backlog ships in order:');
  await receiver.start();
  const result = await transport.flush();
  console.log(`   flush ->`, result);

  await transport.close();
  await receiver.stop();
  const stats = { received: receiver.events.length, requests: receiver.requests.length };
  console.log(`\nDone: ${stats.received} records received in ${stats.requests} requests, nothing lost.`);
  rmSync(dir, { recursive: true, force: true });
  if (stats.received !== 9 || result.pending !== 0) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
