/**
 * The exit spill: records accepted and not yet committed when the process exits (`process.exit()`,
 * the loop running dry, an uncaught exception or unhandled rejection) are written synchronously to
 * a file beside the queue, and committed when a queue on that file opens next, before anything the
 * new transport logs.
 *
 * A spill file is `<dbPath>.spill-<time>-<pid>-<random>`: a header line, then one record per line
 * (a record is JSON on one line). A queue that opens claims each spill file by renaming it (atomic,
 * so two processes never both take one), commits its records, then deletes it.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { RecordBatch } from '../delivery/batch';
import { pidAlive } from './queue-file';

const SPILL = '.spill-';
const CLAIM = '.import-';
const NEWLINE = Buffer.from('\n');

interface Header {
  /** Rows, from the first, that were in a commit under way: they may be in the queue already. */
  readonly maybeCommitted: number;
  /** The destination the rows were logged for. */
  readonly destination: string | undefined;
}

/**
 * Writes `inFlight` (in a commit that may or may not have ended) and then `waiting` to a new spill
 * file beside `file`. Synchronous, for an `'exit'` listener; returns the rows written. Throws on a
 * file system error (the caller swallows it: an exit handler never throws).
 */
export function writeSpill(file: string, destination: string, inFlight: RecordBatch | undefined, waiting: RecordBatch): number {
  const rows = (inFlight?.length ?? 0) + waiting.length;
  if (rows === 0) return 0;
  const parts: Buffer[] = [Buffer.from(`${JSON.stringify({ spill: 1, maybeCommitted: inFlight?.length ?? 0, destination })}\n`)];
  const add = (row: Buffer) => parts.push(Buffer.from(row), NEWLINE);
  inFlight?.forEach(add);
  waiting.forEach(add);
  const name = `${file}${SPILL}${String(Date.now()).padStart(15, '0')}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(name, 'wx', 0o600);
  try {
    const data = Buffer.concat(parts);
    let at = 0;
    while (at < data.length) at += writeSync(fd, data, at, data.length - at);
  } finally {
    closeSync(fd);
  }
  return rows;
}

export interface Spill {
  /** The records, in the order they were logged. */
  readonly rows: string[];
  readonly maybeCommitted: number;
  readonly destination: string | undefined;
  /** Lines that were not a whole record (a write cut short). */
  readonly damaged: number;
  /** Deletes the claimed file: call once its rows are committed. */
  done(): void;
}

/**
 * Claims the spill files beside `file` (oldest first): those no process is importing, and those a
 * process that died while importing had claimed. Each comes back with its rows.
 */
export function claimSpills(file: string): Spill[] {
  const dir = dirname(file);
  const prefix = basename(file) + SPILL;
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
  const claimable = names.filter((n) => {
    const at = n.indexOf(CLAIM);
    return at < 0 || !pidAlive(Number(n.slice(at + CLAIM.length)));
  });
  claimable.sort();
  const spills: Spill[] = [];
  for (const name of claimable) {
    const base = name.includes(CLAIM) ? name.slice(0, name.indexOf(CLAIM)) : name;
    const claimed = join(dir, `${base}${CLAIM}${process.pid}`);
    try {
      renameSync(join(dir, name), claimed);
    } catch {
      continue; // another process took it first
    }
    spills.push(read(claimed));
  }
  return spills;
}

function read(path: string): Spill {
  const lines = readFileSync(path, 'utf8').split('\n');
  let header: Header = { maybeCommitted: 0, destination: undefined };
  try {
    const h = JSON.parse(lines[0] ?? '') as { spill?: number; maybeCommitted?: unknown; destination?: unknown };
    if (h.spill === 1 && typeof h.maybeCommitted === 'number') {
      header = { maybeCommitted: h.maybeCommitted, destination: typeof h.destination === 'string' ? h.destination : undefined };
    }
  } catch {
    // a header cut short: the rows are still read
  }
  const rows: string[] = [];
  let damaged = 0;
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    try {
      JSON.parse(line);
      rows.push(line);
    } catch {
      damaged++;
    }
  }
  return {
    rows,
    maybeCommitted: Math.min(header.maybeCommitted, rows.length),
    destination: header.destination,
    damaged,
    done: () => {
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}
