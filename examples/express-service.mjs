// An Express service that logs every request through VectorTransport and shuts down gracefully on
// SIGTERM: the server stops taking connections, then the transport ships what it can within its
// closeTimeout and closes the queue (anything left ships at the next start).
//
//   npm run build && VECTOR_URL=http://localhost:8080 PORT=3000 node examples/express-service.mjs
import express from 'express';
import winston from 'winston';
import { VectorTransport } from 'winston-vector';

const transport = new VectorTransport({
  vectorUrl: process.env.VECTOR_URL ?? 'http://localhost:8080',
  project: 'shop',
  table: 'http_requests',
  dbPath: process.env.QUEUE_DB ?? './logs/queue.db',
  extraFields: { service: 'shop-api' },
});
transport.on('warn', (err) => console.error(`log delivery: ${err.message}`));
const logger = winston.createLogger({ transports: [transport] });

const app = express();
app.use((req, res, next) => {
  const started = process.hrtime.bigint();
  res.on('finish', () => {
    logger.info('request', {
      method: req.method,
      path: req.path,
      status: res.statusCode,
      duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
    });
  });
  next();
});
app.get('/orders/:id', (req, res) => res.json({ id: req.params.id, status: 'shipped' }));
app.get('/fail', () => {
  throw new Error('something broke');
});
app.use((err, req, res, _next) => {
  logger.error('request failed', { path: req.path, error: err });
  res.status(500).json({ error: 'internal' });
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});

// Ctrl-C: a plain exit is enough, the transport writes what waits beside its queue file on 'exit'
// and ships it at the next start. (Without a handler, a signal kills the process with no 'exit'.)
process.once('SIGINT', () => process.exit(130));
process.once('SIGTERM', () => {
  logger.info('shutting down');
  server.close(async () => {
    await transport.close();
    console.log('stopped');
    process.exit(0);
  });
});
