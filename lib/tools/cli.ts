#!/usr/bin/env node
/**
 * `winston-vector`: see and act on the queue without writing code.
 * Exit codes: 0 done; 1 not everything could be done (drain left records); 2 usage (unknown
 * command or option, bad value, bad URL); 3 the queue file is missing or not a winston-vector queue;
 * 4 the port is in use.
 */
import { createWriteStream, openSync, type WriteStream } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { listDeadLetters, purgeDeadLetters, QueueFileError, type QueueStatus, queueStatus, retryDeadLetters } from './admin';
import { runDemo } from './demo';
import { redact } from '../errors';
import { destinationKey } from '../winston/options';
import { type Decoding, VectorReceiver } from './receiver';
import { VectorTransport } from '../winston/transport';

export const EXIT = Object.freeze({ OK: 0, INCOMPLETE: 1, USAGE: 2, QUEUE_FILE: 3, PORT_IN_USE: 4 });

class UsageError extends Error {}

interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Whether stderr is a terminal (progress bars redraw in place). */
  tty: boolean;
}

const HELP: Record<string, string> = {
  main: `Usage: winston-vector <command> [options]

Commands:
  status         pending records, dead letters, drops, last error and success of a queue file
  drain          ship everything queued now to a Vector URL, then exit
  dead-letters   list, retry or purge the records the receiver rejected
  receive        a local receiver that answers like Vector's http_server and prints each record
  demo           log through winston to a local receiver, across an outage, and show it arriving

Run 'winston-vector <command> --help' for its options.
Exit codes: 0 done, 1 not everything done, 2 usage error, 3 queue file missing or foreign, 4 port in use.`,
  status: `Usage: winston-vector status [--db PATH] [--json]

Shows a queue file: pending records and bytes, age of the oldest, dead letters, records dropped
by the bounds (by reason), last delivery error and last success.
  --db PATH   the queue file (default ./logs/queue.db)
  --json      one JSON object, for scripts`,
  drain: `Usage: winston-vector drain --db PATH --url URL [--from DEST] [--batch-size N] [--timeout MS] [--rounds N]

Ships the records queued in PATH for URL (or, with --from, those logged for DEST: a Vector that
moved) to Vector's http_server source at URL, with a progress bar and a summary. Exits 1 if
anything could not be delivered (it stays in the file).
  --db PATH         the queue file (required)
  --url URL         Vector's http_server source; user:password@ in it becomes basic auth (required)
  --from DEST       the destination the records were logged for, as 'status' lists it (default URL)
  --batch-size N    records per request (default 1000)
  --timeout MS      per-request timeout (default 10000)
  --rounds N        failed rounds in a row before giving up (default 3)`,
  'dead-letters': `Usage: winston-vector dead-letters list|retry|purge --db PATH [--id N ...] [--json] [--limit N]

  list    the rejected records, with the receiver's answer (--json, --limit N: default 100)
  retry   put them back at the end of the queue; the next transport or 'drain' sends them
  purge   delete them
  --id N  only these (repeatable); default all`,
  receive: `Usage: winston-vector receive [--port 8080] [--host 127.0.0.1] [--out FILE] [--decoding json|json-bytes|bytes]

A local receiver that answers like Vector's http_server source and prints each record as one JSON
line (or appends it to FILE). For trying the package without Vector. Ctrl-C stops it.
  --decoding   json (decoding.codec = "json", default), json-bytes (the legacy encoding = "json"), bytes`,
  demo: `Usage: winston-vector demo

Starts a local receiver, logs through winston with VectorTransport, stops the receiver, logs more
(kept on disk), starts it again and shows every record arriving in order.`,
};

type Values = Record<string, string | boolean | string[] | undefined>;
type OptionSpec = Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;

function parse(args: string[], options: OptionSpec, positionals = false): { values: Values; positionals: string[] } {
  // `--port -1` as `--port=-1`, so a negative number gets the option's own message, not parseArgs'.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!.startsWith('--') ? args[i]!.slice(2) : undefined;
    if (name !== undefined && options[name]?.type === 'string' && /^-\d/.test(args[i + 1] ?? '')) joined.push(`${args[i]}=${args[++i]}`);
    else joined.push(args[i]!);
  }
  try {
    const { values, positionals: found } = parseArgs({
      args: joined,
      options: { help: { type: 'boolean', short: 'h' }, ...options },
      allowPositionals: true,
      strict: true,
    });
    if (!positionals && found.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(found[0])}`);
    return { values: values as Values, positionals: found };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError((err as Error).message);
  }
}

/** A whole number of at least `min` (and at most `max`), or `fallback` when the option is absent. */
function wholeNumber(name: string, value: unknown, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value === '' || !Number.isInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `${min} to ${max}`;
    throw new UsageError(`--${name} must be a whole number, ${range}, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** "1 record", "2 records". */
export const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

const age = (ms: number | null) =>
  ms === null ? '-' : ms < 60_000 ? `${Math.round(ms / 1000)}s` : ms < 3_600_000 ? `${Math.round(ms / 60_000)}m` : `${(ms / 3_600_000).toFixed(1)}h`;

async function status(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { db: { type: 'string' }, json: { type: 'boolean' } });
  if (values.help) return help('status', io);
  const s = await queueStatus(String(values.db ?? './logs/queue.db'));
  if (values.json) {
    io.out(`${JSON.stringify(s)}\n`);
    return EXIT.OK;
  }
  const dropped = Object.entries(s.dropped).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  io.out(
    [
      `queue         ${s.dbPath}`,
      `pending       ${plural(s.pending, 'record')}, ${plural(s.pendingBytes, 'byte')}`,
      ...Object.entries(s.destinations).map(([d, n]) => `  for         ${d}: ${n}`),
      ...s.held.map((h) => `  held        ${heldLine(h)}`),
      `oldest        ${age(s.oldestPendingAgeMs)}`,
      `dead letters  ${s.deadLetters}`,
      `dropped       ${dropped}`,
      `last error    ${s.lastError ? `${s.lastError.at} ${s.lastError.message}` : '-'}`,
      `last success  ${s.lastSuccess ? `${s.lastSuccess.at} ${s.lastSuccess.message}` : '-'}`,
    ].join('\n') + '\n',
  );
  return EXIT.OK;
}

function heldLine(h: QueueStatus['held'][number]): string {
  const who = h.pid === undefined ? `owner ${h.owner}` : `process ${h.pid}${h.host === hostname() ? '' : ` on host ${h.host}`}`;
  return `${plural(h.records, 'record')} ${h.records === 1 ? 'is' : 'are'} held by ${who} (its lease ends in ${age(h.leaseEndsInMs)})`;
}

function bar(done: number, total: number): string {
  const width = 30;
  const part = total === 0 ? 1 : Math.min(1, done / total);
  const filled = Math.round(part * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total}`;
}

async function drain(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {
    db: { type: 'string' },
    url: { type: 'string' },
    from: { type: 'string' },
    'batch-size': { type: 'string' },
    timeout: { type: 'string' },
    rounds: { type: 'string' },
  });
  if (values.help) return help('drain', io);
  if (!values.db) throw new UsageError('--db is required');
  if (!values.url) throw new UsageError('--url is required');
  const batchSize = wholeNumber('batch-size', values['batch-size'], 1000);
  const timeout = wholeNumber('timeout', values.timeout, 10_000);
  const rounds = wholeNumber('rounds', values.rounds, 3);
  const before = await queueStatus(String(values.db));
  let transport: VectorTransport;
  try {
    transport = new VectorTransport({
      vectorUrl: String(values.url),
      destination: values.from === undefined ? undefined : String(values.from),
      project: 'drain',
      table: 'drain',
      dbPath: String(values.db),
      batchSize,
      timeout,
      flushInterval: 3_600_000,
      retryDelay: 500,
      maxRetryDelay: 5000,
      closeTimeout: 0,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const total = await transport.pendingCount();
  const others = Object.entries(before.destinations).filter(([d]) => d !== '(any)' && d !== destinationKey(String(values.from ?? values.url)));
  for (const [d, n] of others) io.err(`${plural(n, 'record')} ${n === 1 ? 'is' : 'are'} for ${d}: not sent (pass --from ${JSON.stringify(d)} to send them to --url)\n`);
  let lastWarn = '';
  transport.on('warn', (err: Error) => (lastWarn = err.message));
  transport.on('error', (err: Error) => (lastWarn = err.message));
  let delivered = 0;
  let failures = 0;
  let pending = total;
  const show = () => (io.tty ? io.err(`\r${bar(delivered, total)}`) : undefined);
  show();
  while (pending > 0 && failures < rounds) {
    const r = await transport.flush();
    const before = delivered;
    // The transport also ships on its own from the start, not only inside flush().
    delivered = (await transport.stats()).delivered;
    pending = r.pending;
    failures = delivered === before ? failures + 1 : 0;
    show();
    if (!io.tty) io.err(`${bar(delivered, total)}\n`);
  }
  const stats = await transport.stats();
  delivered = stats.delivered;
  await transport.close();
  if (io.tty) io.err('\n');
  io.out(`delivered ${delivered}, dead-lettered ${stats.deadLettered}, left ${pending}\n`);
  if (pending > 0) {
    // Records another live process has claimed cannot be taken: say whose they are.
    const held = (await queueStatus(String(values.db))).held;
    for (const h of held) io.err(`${heldLine(h)}: not sent by this drain\n`);
    const why = stats.lastError?.message ?? (lastWarn || undefined);
    if (why !== undefined || held.length === 0) io.err(`not everything could be delivered: ${redact(why ?? 'the records stayed pending')}\n`);
    return EXIT.INCOMPLETE;
  }
  return EXIT.OK;
}

async function deadLetters(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, {
    db: { type: 'string' },
    id: { type: 'string', multiple: true },
    json: { type: 'boolean' },
    limit: { type: 'string' },
  }, true);
  const action = positionals[0];
  if (values.help || action === undefined) return help('dead-letters', io, action === undefined && !values.help);
  if (!values.db) throw new UsageError('--db is required');
  const ids = (values.id as string[] | undefined)?.map((id) => wholeNumber('id', id, 0));
  const db = String(values.db);
  const missing = async (): Promise<number[]> => {
    if (!ids || ids.length === 0) return [];
    const have = new Set((await listDeadLetters(db, Number.MAX_SAFE_INTEGER)).map((r) => r.id));
    return ids.filter((id) => !have.has(id));
  };
  switch (action) {
    case 'list': {
      const rows = await listDeadLetters(db, wholeNumber('limit', values.limit, 100));
      if (values.json) io.out(`${JSON.stringify(rows)}\n`);
      else if (rows.length === 0) io.out('no dead letters\n');
      else for (const r of rows) io.out(`#${r.id}  ${r.failedAt}  HTTP ${r.status ?? '-'}  ${r.reason}\n    ${r.body.slice(0, 300)}\n`);
      return EXIT.OK;
    }
    case 'retry':
    case 'purge': {
      const absent = await missing();
      const n = action === 'retry' ? await retryDeadLetters(db, ids) : await purgeDeadLetters(db, ids);
      io.out(`${plural(n, 'dead letter')} ${action === 'retry' ? 'put back in the queue' : 'deleted'}\n`);
      if (absent.length > 0) {
        io.err(`no dead letter with id ${absent.join(', ')}\n`);
        return EXIT.INCOMPLETE;
      }
      return EXIT.OK;
    }
    default:
      throw new UsageError(`unknown dead-letters action ${JSON.stringify(action)}: list, retry or purge`);
  }
}

async function receive(args: string[], io: Io, signal?: AbortSignal): Promise<number> {
  const { values } = parse(args, { port: { type: 'string' }, host: { type: 'string' }, out: { type: 'string' }, decoding: { type: 'string' } });
  if (values.help) return help('receive', io);
  const decoding = String(values.decoding ?? 'json');
  if (!['json', 'json-bytes', 'bytes'].includes(decoding)) throw new UsageError(`--decoding must be json, json-bytes or bytes, got ${JSON.stringify(decoding)}`);
  const port = wholeNumber('port', values.port, 8080, 0, 65535);
  let out: WriteStream | undefined;
  if (values.out) {
    // Opened here, so a path that cannot be written is one line and exit 2, not a stream's 'error'.
    let fd: number;
    try {
      fd = openSync(String(values.out), 'a');
    } catch (err) {
      throw new UsageError(`--out ${JSON.stringify(values.out)} cannot be written: ${(err as Error).message}`);
    }
    out = createWriteStream('', { fd });
    out.on('error', (err) => io.err(`winston-vector: writing ${JSON.stringify(values.out)} failed: ${err.message}\n`));
  }
  const receiver = new VectorReceiver({ decoding: decoding as Decoding, host: String(values.host ?? '127.0.0.1'), keepEvents: false });
  receiver.on('events', (events: unknown[]) => {
    const text = events.map((e) => `${JSON.stringify(e)}\n`).join('');
    if (out) out.write(text);
    else io.out(text);
  });
  try {
    await receiver.start(port);
  } catch (err) {
    if (out) await new Promise<void>((resolve) => out.end(() => resolve()));
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      io.err(`port ${port} is in use\n`);
      return EXIT.PORT_IN_USE;
    }
    throw err;
  }
  io.err(`receiving on ${receiver.url} (like Vector's http_server, decoding ${decoding})${out ? `, appending to ${values.out}` : ''}; Ctrl-C stops\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    signal?.addEventListener('abort', stop, { once: true });
  });
  await receiver.stop();
  if (out) await new Promise<void>((resolve) => out.end(() => resolve()));
  io.err(`stopped after ${plural(receiver.received, 'record')}\n`);
  return EXIT.OK;
}

function help(topic: string, io: Io, asError = false): number {
  (asError ? io.err : io.out)(`${HELP[topic] ?? HELP.main}\n`);
  return asError ? EXIT.USAGE : EXIT.OK;
}

/** Runs one command line; resolves to the exit code. */
export async function main(argv: string[], io: Io, signal?: AbortSignal): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'status':
        return await status(rest, io);
      case 'drain':
        return await drain(rest, io);
      case 'dead-letters':
        return await deadLetters(rest, io);
      case 'receive':
        return await receive(rest, io, signal);
      case 'demo':
        if (parse(rest, {}).values.help) return help('demo', io);
        return (await runDemo((line) => io.out(`${line}\n`))) ? EXIT.OK : EXIT.INCOMPLETE;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        return help(rest[0] ?? 'main', io, command === undefined);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`winston-vector: ${redact(err.message)}\nRun 'winston-vector ${command && HELP[command] ? `${command} ` : ''}--help' for usage.\n`);
      return EXIT.USAGE;
    }
    if (err instanceof QueueFileError) {
      io.err(`winston-vector: ${err.message}\n`);
      return EXIT.QUEUE_FILE;
    }
    io.err(`winston-vector: ${redact((err as Error).message)}\n`);
    return EXIT.INCOMPLETE;
  }
}

if (require.main === module) {
  main(process.argv.slice(2), {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    tty: Boolean(process.stderr.isTTY),
  }).then((code) => {
    process.exitCode = code;
  });
}
