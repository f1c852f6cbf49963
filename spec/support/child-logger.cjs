// A logging process for the fault suite, run as a real child so it can be killed, paused and
// restarted. It loads the built package (dist/). Settings come in WV_CHILD as JSON:
//   { dbPath, url, run, count, burst, mode, options }
// and it prints one line per event on stdout: "ack <i>" once record <i> is committed, "flushed",
// "done"; warnings go to stderr as "warn <name> <message>".
'use strict';
const path = require('node:path');
const winston = require('winston');
const { VectorTransport } = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));

const cfg = JSON.parse(process.env.WV_CHILD);
const transport = new VectorTransport({
  vectorUrl: cfg.url,
  project: 'faults',
  table: 'child',
  dbPath: cfg.dbPath,
  flushInterval: 50,
  retryDelay: 20,
  maxRetryDelay: 200,
  timeout: 2000,
  ...cfg.options,
});
transport.on('warn', (err) => process.stderr.write(`warn ${err.name} ${err.message}\n`));
transport.on('error', (err) => process.stderr.write(`error ${err.name} ${err.message}\n`));
transport.on('logged', (info) => process.stdout.write(`ack ${info.seq}\n`));
const logger = winston.createLogger({ level: 'silly', transports: [transport] });

async function main() {
  const burst = cfg.burst ?? 50;
  for (let i = 0; i < cfg.count; i++) {
    logger.info(`${cfg.run}:${i}`, { run: cfg.run, seq: i, pad: cfg.pad ? 'p'.repeat(cfg.pad) : undefined });
    if (i % burst === burst - 1) await new Promise((r) => setImmediate(r));
  }
  if (cfg.mode === 'memory') {
    await transport.flush();
    global.gc();
    process.stdout.write(`heap ${process.memoryUsage().heapUsed}\n`);
  }
  if (cfg.mode === 'flush' || cfg.mode === 'memory') {
    await transport.flush();
    process.stdout.write('flushed\n');
  }
  if (cfg.mode === 'hang') return; // stays up: the parent kills or stops it
  if (cfg.mode !== 'keep') {
    await transport.close();
    process.stdout.write('done\n');
  }
}

if (cfg.mode === 'memory') {
  global.gc();
  process.stdout.write(`heap ${process.memoryUsage().heapUsed}\n`);
}
main().catch((err) => {
  process.stderr.write(`fatal ${err && err.stack}\n`);
  process.exitCode = 1;
});
if (cfg.mode === 'hang' || cfg.mode === 'keep') setInterval(() => {}, 1000);
