/**
 * Opening a queue file: whether it is a queue at all (a file of another application is refused and
 * left as it is), its pragmas and schema, the check after a crash, and a damaged file set aside with
 * what can still be read of it carried over.
 */
import { existsSync, renameSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { APPLICATION_ID, fileKind, ownerDied, prepareDatabaseFile, QUEUE_TABLES, SCHEMA_VERSION } from './queue-file';
import { SqliteQueue, type QueueOptions } from './queue';
import { isBusy, isCorrupt, SCHEMA } from './sql';
import { Connection } from './sqlite';

/** The file is not a queue: never retried, never touched. */
export class ForeignFileError extends Error {
  override readonly name = 'ForeignFileError';
}

/**
 * For how long, in ms, an open that SQLite refused as busy at once (well inside the busy timeout) is
 * tried again, a few ms apart, before it counts as failed. SQLite answers `PRAGMA journal_mode=WAL`
 * so, without waiting, while another connection holds the write lock of a file not yet in WAL mode:
 * two transports creating one new file at the same time.
 */
const BUSY_RACE_MS = 2000;

/** Rows read at a time from a damaged file (fewer, down to one, where a read fails). */
const SALVAGE_RANGE = 500;

/** Consecutive rows of one destination, in order. */
function groupBy(rows: ReadonlyArray<{ readonly body: string; readonly destination: string | null }>): Array<[string | null, string[]]> {
  const out: Array<[string | null, string[]]> = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && last[0] === r.destination) last[1].push(r.body);
    else out.push([r.destination, [r.body]]);
  }
  return out;
}

/** Opens (or creates) the queue. A corrupt file is set aside, renamed and kept, and a new one is made. */
export async function openQueue(file: string, options: QueueOptions): Promise<SqliteQueue> {
  try {
    return await openThroughRaces(file, options);
  } catch (err) {
    // Only a file that is recognisably ours is set aside; any other is left as it is.
    if (!isCorrupt(err) || fileKind(file) !== 'ours') throw err;
    const aside = `${file}.corrupt-${Date.now()}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
    }
    prepareDatabaseFile(file);
    const queue = await openOnce(file, options);
    const { saved, lost } = await salvage(queue, aside);
    options.onWarn(
      `queue file ${file} was unreadable; set aside as ${aside}, a new one was created; ${saved} record(s) read from it were kept, ${lost} could not be read (dropped as damaged-file)`,
      err,
    );
    return queue;
  }
}

/**
 * Reads what SQLite can still read of the records in a damaged file (set aside) into this queue,
 * in their order, range by range; the records of the ranges it cannot read are counted as
 * dropped (`damaged-file`, estimated from their ids), and a notice tells downstream.
 */
async function salvage(queue: SqliteQueue, aside: string): Promise<{ saved: number; lost: number }> {
  let saved = 0;
  let lost = 0;
  let old: Connection | undefined;
  try {
    old = await Connection.open(aside, 1000, false);
    // A truncated file is refused whole unless the schema may be read as it is (read only here).
    await old.exec('PRAGMA writable_schema = ON').catch(() => undefined);
    // The last id given out (AUTOINCREMENT keeps it in a small table of its own), else the largest.
    // (Bounded by what the file could hold, in case the damage reaches that number too.)
    const last = Math.min(
      Math.ceil(statSync(aside).size / 8),
      (await old.get<{ n: number }>("SELECT seq AS n FROM sqlite_sequence WHERE name = 'records'").catch(() => undefined))?.n ??
        (await old.get<{ n: number }>('SELECT max(id) AS n FROM records').catch(() => undefined))?.n ??
        0,
    );
    // Walk forward from the oldest (rows below it were delivered, so the ids above it are what
    // waited), fewer rows at a time where a read fails, down to one: an id that cannot be read
    // is counted as lost.
    let after = 0;
    let limit = SALVAGE_RANGE;
    for (;;) {
      let rows: Array<{ id: number; body: string; destination: string | null }>;
      try {
        rows = await old.all('SELECT id, CAST(body AS TEXT) AS body, destination FROM records WHERE id > ? ORDER BY id LIMIT ?', [after, limit]);
      } catch {
        if (limit > 1) {
          limit = Math.ceil(limit / 10);
          continue;
        }
        if (after >= last) break;
        lost++;
        after++;
        continue;
      }
      if (rows.length === 0) break;
      for (const [destination, group] of groupBy(rows)) {
        await queue.restore(group, destination ?? undefined);
        saved += group.length;
      }
      after = rows[rows.length - 1]!.id;
      limit = SALVAGE_RANGE;
    }
  } catch {
    // nothing more can be read
  } finally {
    await old?.close().catch(() => undefined);
  }
  if (lost > 0) await queue.countDamaged(lost);
  return { saved, lost };
}

/**
 * Reads, before anything is written, whether the file is a queue: marked as one, or unmarked with
 * no table but the queue's (a new file, or one written by an older version), which is marked now.
 * Any other file is refused untouched.
 */
async function checkMark(conn: Connection, file: string): Promise<void> {
  const id = (await conn.get<{ application_id: number }>('PRAGMA application_id'))?.application_id ?? 0;
  if (id === APPLICATION_ID) return;
  const tables = id === 0 ? await conn.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'") : [];
  if (id !== 0 || tables.some((t) => !QUEUE_TABLES.has(t.name))) {
    throw new ForeignFileError(`${file} is a SQLite file of another application, not a winston-vector queue; it was left as it is`);
  }
  await conn.exec(`PRAGMA application_id = ${APPLICATION_ID}; PRAGMA user_version = ${SCHEMA_VERSION};`);
}

/**
 * `openOnce`, tried again while SQLite refuses it as busy at once (see BUSY_RACE_MS). A refusal that
 * came after the whole busy timeout is a lock held that long: it is thrown, for the caller's backoff.
 */
async function openThroughRaces(file: string, options: QueueOptions): Promise<SqliteQueue> {
  const until = Date.now() + BUSY_RACE_MS;
  for (;;) {
    const started = Date.now();
    try {
      return await openOnce(file, options);
    } catch (err) {
      const now = Date.now();
      if (!isBusy(err) || now - started >= options.busyTimeout || now >= until) throw err;
      await sleep(5 + Math.random() * 20);
    }
  }
}

async function openOnce(file: string, options: QueueOptions): Promise<SqliteQueue> {
  const conn = await Connection.open(file, options.busyTimeout);
  try {
    await checkMark(conn, file);
    await conn.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=${options.synchronous.toUpperCase()};`);
    // A process that had the file open died without closing it: check the file before trusting
    // it, so a truncated or damaged one is found here, not in the middle of a delivery. (A clean
    // history skips the check: it reads the whole file, seconds for a large backlog.)
    const crashed = await crashedOpeners(conn);
    if (crashed.length > 0) {
      const check = await conn.all<{ quick_check: string }>('PRAGMA quick_check(1)');
      if (check[0]?.quick_check !== 'ok') {
        throw Object.assign(new Error(`integrity check failed: ${check[0]?.quick_check ?? 'no answer'}`), { corrupt: true });
      }
    }
    await conn.exec(SCHEMA);
    const columns = await conn.all<{ name: string }>('SELECT name FROM pragma_table_info(\'records\')');
    if (!columns.some((c) => c.name === 'destination')) await conn.exec('ALTER TABLE records ADD COLUMN destination TEXT');
    if (crashed.length > 0) await conn.run('DELETE FROM state WHERE key IN (SELECT value FROM json_each(?))', [JSON.stringify(crashed)]);
    const pageSize = (await conn.get<{ page_size: number }>('PRAGMA page_size'))?.page_size ?? 4096;
    return await SqliteQueue.started(conn, options, file, pageSize);
  } catch (err) {
    await conn.close().catch(() => undefined);
    throw err;
  }
}

/** `open:` marks left in the file by processes of this host that no longer run. */
async function crashedOpeners(conn: Connection): Promise<string[]> {
  let rows: Array<{ key: string }>;
  try {
    rows = await conn.all<{ key: string }>("SELECT key FROM state WHERE key LIKE 'open:%'");
  } catch (err) {
    if (isCorrupt(err)) throw err;
    return []; // a new file: no state table yet
  }
  return rows.map((r) => r.key).filter((key) => ownerDied(key.slice('open:'.length)));
}
