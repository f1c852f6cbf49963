// A Node cluster: several workers log through VectorTransport into one shared queue file. The
// queue is safe to share: each batch is leased by one process, so nothing is sent twice, and a
// worker that dies leaves its records for the others (or the next start) to ship.
//
//   npm run build && VECTOR_URL=http://localhost:8080 WORKERS=4 RECORDS=1000 node examples/cluster.mjs
import cluster from 'node:cluster';
import winston from 'winston';
import { VectorTransport } from 'winston-vector';

const workers = Number(process.env.WORKERS ?? 4);
const records = Number(process.env.RECORDS ?? 1000);

if (cluster.isPrimary) {
  let exited = 0;
  for (let i = 0; i < workers; i++) cluster.fork({ WORKER_INDEX: String(i) });
  cluster.on('exit', (worker, code) => {
    if (code !== 0) console.error(`worker ${worker.process.pid} exited with ${code}`);
    if (++exited === workers) console.log(`all ${workers} workers done`);
  });
} else {
  const transport = new VectorTransport({
    vectorUrl: process.env.VECTOR_URL ?? 'http://localhost:8080',
    project: 'shop',
    table: 'worker_logs',
    dbPath: process.env.QUEUE_DB ?? './logs/queue.db',
    extraFields: { worker: Number(process.env.WORKER_INDEX) },
  });
  transport.on('warn', (err) => console.error(`worker ${process.pid}: ${err.message}`));
  const logger = winston.createLogger({ transports: [transport] });
  for (let i = 0; i < records; i++) logger.info('work item done', { item: i });
  await transport.close();
  process.exit(0);
}
