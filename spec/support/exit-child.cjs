// A process that logs and then ends one of the ways real processes end, right after logging.
// Settings in WV_EXIT as JSON: { dbPaths: [..], url, count, how, options }. One transport per dbPath,
// all on one logger. It prints "logged" once every log call returned, and "exit <code> <ms>" from
// its own 'exit' listener (ms since the fault) on stderr.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const winston = require('winston');
const { VectorTransport } = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));

const cfg = JSON.parse(process.env.WV_EXIT);
const handlers = cfg.how === 'winston-exception' || cfg.how === 'winston-rejection';
const transports = cfg.dbPaths.map(
  (dbPath) =>
    new VectorTransport({
      vectorUrl: cfg.url,
      project: 'exits',
      table: 'child',
      dbPath,
      handleExceptions: handlers,
      handleRejections: handlers,
      ...cfg.options,
    }),
);
for (const t of transports) t.on('warn', (err) => process.stderr.write(`warn ${err.message}\n`));
const logger = winston.createLogger({ transports });
if (cfg.how === 'signal') {
  // The two lines README shows: a signal becomes an exit, and the exit spill keeps what waits.
  process.on('SIGTERM', () => process.exit(143));
  process.on('SIGINT', () => process.exit(130));
}
let faultAt = 0;
process.on('exit', (code) => fs.writeSync(2, `exit ${code} ${Date.now() - faultAt}\n`));

for (let i = 0; i < cfg.count; i++) logger.info(`m${i}`, { seq: i });
process.stdout.write('logged\n');
faultAt = Date.now();
switch (cfg.how) {
  case 'exit':
    process.exit(3);
  case 'throw':
  case 'winston-exception':
    setImmediate(() => {
      throw new Error('crash after logging');
    });
    break;
  case 'reject':
  case 'winston-rejection':
    setImmediate(() => Promise.reject(new Error('rejected after logging')));
    break;
  case 'dry':
    break; // nothing keeps the loop alive: it runs dry
  case 'signal':
    setInterval(() => {}, 1000); // stays up until the parent's signal
    break;
}
