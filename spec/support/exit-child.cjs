// A process that logs and then ends one of the ways real processes end, right after logging.
// Settings in WV_EXIT as JSON: { dbPaths: [..], url, count, how, options, warm }. One transport per
// dbPath, all on one logger. With `warm`, it first logs "warm" and waits for its commit (the file is
// open, as in a service that has run a while), then logs `count` records in one synchronous loop.
// It prints "logged" once every log call returned, and "exit <code> <ms>" from its own 'exit'
// listener (ms since the fault) on stderr. `exit-in-load` and `exit-in-callback` run under
// spec/support/slow-native.cjs: they exit while the worker loads a module, or while it is in
// node-sqlite3's native code after a statement's callback, and the 'exit' listener prints the
// markers it left ("markers a,b").
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
/** The slow-native hook's marker directory, when it is preloaded. */
const slowDir = process.env.WV_SLOW ? JSON.parse(process.env.WV_SLOW).dir : undefined;
let faultAt = 0;
process.on('exit', (code) => {
  fs.writeSync(2, `exit ${code} ${Date.now() - faultAt}\n`);
  if (slowDir) fs.writeSync(2, `markers ${fs.readdirSync(slowDir).sort().join(',')}\n`);
});

/** Resolves once the slow-native hook left `name` (polled: the worker goes on meanwhile). */
async function marked(name) {
  const file = path.join(slowDir, name);
  while (!fs.existsSync(file)) await new Promise((resolve) => setTimeout(resolve, 2));
}

async function main() {
  if (cfg.warm) {
    logger.info('warm', { seq: -1 });
    for (const t of transports) await t.committed();
  }
  if (cfg.how === 'exit-in-callback') fs.writeFileSync(path.join(slowDir, 'arm'), '');
  for (let i = 0; i < cfg.count; i++) logger.info(`m${i}`, { seq: i });
  process.stdout.write('logged\n');
  faultAt = Date.now();
  end();
}

function end() {
  switch (cfg.how) {
    case 'exit':
      process.exit(3);
    case 'exit-in-load':
      void marked('load-start').then(() => process.exit(3));
      break;
    case 'exit-in-callback':
      void marked('in-callback').then(() => process.exit(3));
      break;
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
    case 'kill9':
      // Still no yield: the main thread stays busy a second, then the process is killed outright
      // (no 'exit' listener runs). What it keeps is what the worker committed meanwhile.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
      process.kill(process.pid, 'SIGKILL');
      break;
  }
}

// Without `warm`, nothing is awaited: the loop and the end run in the first tick, as before.
void main();
