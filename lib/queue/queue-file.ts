/**
 * The queue file on disk, before SQLite opens it: what it is, and whether it may be touched.
 * A winston-vector queue is marked (`PRAGMA application_id`, `PRAGMA user_version`); a file that
 * is not one (not SQLite, or SQLite of another application) is refused and left byte for byte as
 * it was: never renamed, chmod'ed, or given tables. A symlinked `dbPath` is refused too: following
 * it would write, and maybe set aside, whatever file it points at.
 */
import { closeSync, fstatSync, lstatSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { VectorQueueError } from '../errors';

/** `PRAGMA application_id` of a queue file: "wvq1". */
export const APPLICATION_ID = 0x77767131;
/** `PRAGMA user_version`: the schema's version. */
export const SCHEMA_VERSION = 1;

const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

/** The queue's own tables (and SQLite's AUTOINCREMENT bookkeeping): an unmarked file with only these is an older queue. */
export const QUEUE_TABLES = new Set(['records', 'counters', 'state', 'dead_letters', 'sqlite_sequence']);

export type FileKind =
  /** No file yet. */
  | 'missing'
  /** 0 bytes: a process died before it wrote the schema. An empty queue. */
  | 'empty'
  /** A SQLite file marked as a winston-vector queue. */
  | 'ours'
  /** A SQLite file with no application id: an older queue, a new empty database, or another app's. */
  | 'unmarked'
  /** Not SQLite, or SQLite of another application. */
  | 'foreign';

/** What the file at `file` is, from its first 100 bytes (SQLite's header). Never changes it. */
export function fileKind(file: string): FileKind {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw err;
  }
  try {
    if (fstatSync(fd).size === 0) return 'empty';
    const header = Buffer.alloc(100);
    const n = readSync(fd, header, 0, 100, 0);
    if (n < 100 || !header.subarray(0, 16).equals(SQLITE_MAGIC)) return 'foreign';
    const id = header.readUInt32BE(68);
    if (id === APPLICATION_ID) return 'ours';
    return id === 0 ? 'unmarked' : 'foreign';
  } finally {
    closeSync(fd);
  }
}

export interface PreparedFile {
  /** The resolved path. */
  readonly file: string;
  /** Things worth a `'warn'` (a directory others may write to). */
  readonly warnings: readonly string[];
}

/**
 * Makes sure `dbPath` can be the queue file: its directory exists (created 0700), and the file is
 * missing (then created, 0600), empty, or a queue. Synchronous on purpose: it runs in the
 * transport's constructor, so a `dbPath` that can never work fails there, naming the path.
 */
export function prepareDatabaseFile(dbPath: string): PreparedFile {
  const file = resolve(dbPath);
  const fail = (why: string, cause?: unknown): never => {
    throw new VectorQueueError(`\`dbPath\` ${JSON.stringify(file)} cannot be used as the queue file (${why})`, { cause });
  };
  const warnings: string[] = [];
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  } catch (err) {
    fail((err as NodeJS.ErrnoException).code ?? 'unknown error', err);
  }
  let link = false;
  try {
    link = lstatSync(file).isSymbolicLink();
  } catch {
    // missing
  }
  if (link) fail('it is a symbolic link; point dbPath at the real path');
  let kind: FileKind;
  try {
    kind = fileKind(file);
  } catch (err) {
    return fail((err as NodeJS.ErrnoException).code ?? 'unknown error', err);
  }
  if (kind === 'foreign') fail('it is not a winston-vector queue; it was left as it is');
  if (kind === 'missing') {
    try {
      closeSync(openSync(file, 'wx', 0o600));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') fail((err as NodeJS.ErrnoException).code ?? 'unknown error', err);
    }
  }
  try {
    const mode = statSync(dirname(file)).mode;
    // Others may write there (and the sticky bit does not stop them creating files beside ours).
    if ((mode & 0o022) !== 0) warnings.push(`the directory of the queue file ${dirname(file)} can be written by other users (mode ${(mode & 0o777).toString(8)})`);
  } catch {
    // the open below will say what is wrong
  }
  return { file, warnings };
}

/** True while process `pid` of this host runs (EPERM: it runs, as another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** An owner token (`host:pid:random`) of another process of this host that no longer runs. */
export function ownerDied(owner: string): boolean {
  const [host, pid] = owner.split(':');
  return host === hostname() && Number(pid) !== process.pid && !pidAlive(Number(pid));
}
