// A short-lived job (a cron task, a serverless function): log, then give delivery a deadline before
// exiting. Whatever is not delivered by then stays in the queue file and ships at the next run.
//
//   npm run build && VECTOR_URL=http://localhost:8080 DEADLINE_MS=2000 node examples/short-lived-job.mjs
import winston from 'winston';
import { VectorTransport } from 'winston-vector';

const deadline = Number(process.env.DEADLINE_MS ?? 2000);
const transport = new VectorTransport({
  vectorUrl: process.env.VECTOR_URL ?? 'http://localhost:8080',
  project: 'shop',
  table: 'jobs',
  dbPath: process.env.QUEUE_DB ?? './logs/queue.db',
  closeTimeout: 0, // the deadline below is the only wait
});
transport.on('warn', () => undefined); // the summary below says what happened
const logger = winston.createLogger({ transports: [transport] });

logger.info('job started', { job: 'nightly-report' });
for (let i = 0; i < 25; i++) logger.info('row exported', { row: i });
logger.info('job finished', { rows: 25 });

const started = Date.now();
let timer;
await Promise.race([transport.flush(), new Promise((resolve) => (timer = setTimeout(resolve, deadline)))]);
clearTimeout(timer);
const took = Date.now() - started;
const { delivered, lastError } = await transport.stats();
const left = await transport.pendingCount();
await transport.close(); // returns at once; an unfinished request is abandoned, its records kept
const records = (n) => `${n} ${n === 1 ? 'record' : 'records'}`;
console.log(
  delivered > 0
    ? `delivered ${records(delivered)} in ${took} ms; ${records(left)} left for the next run`
    : `nothing delivered in ${took} ms${lastError ? ` (${lastError.message})` : ''}; ${records(left)} left for the next run`,
);
