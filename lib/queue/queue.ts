import { randomBytes } from 'node:crypto';
import { existsSync, renameSync, statfsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { hostname } from 'node:os';
import { RecordBatch } from '../delivery/batch';
import { VectorQueueError } from '../errors';
import { APPLICATION_ID, fileKind, pidAlive, prepareDatabaseFile, QUEUE_TABLES, SCHEMA_VERSION } from './queue-file';
import { Connection } from './sqlite';

/** One record waiting in the queue, as it will be sent. */
export interface QueuedRecord {
  readonly id: number;
  readonly body: string;
}

/** What the scheduler needs of a queue; the SQLite queue is one, tests may bring another. */
export interface Queue {
  /**
   * Commits the records; resolves once they are durable. The queue does not keep the batch after
   * that (its chunks are written again).
   */
  append(records: RecordBatch | readonly string[]): Promise<void>;
  /** Leases up to `limit` of the oldest records that nobody else holds. */
  claim(limit: number): Promise<QueuedRecord[]>;
  /** Deletes delivered records this queue still holds the lease on. */
  ack(ids: readonly number[]): Promise<number>;
  /** Extends the lease on those of `ids` this queue still holds; returns them. */
  renew(ids: readonly number[]): Promise<number[]>;
  /** Gives the lease back so the records are claimed again, oldest first. */
  release(ids: readonly number[]): Promise<void>;
  /** Moves records that stay rejected to the dead-letter table. */
  deadLetter(ids: readonly number[], status: number | undefined, reason: string): Promise<number>;
  /** The newest record id now in the queue, 0 when empty. */
  maxId(): Promise<number>;
  /** Keeps the last delivery error or success in the file, for `winston-vector status`. */
  note?(key: 'last_error' | 'last_success', value: string, at?: number): void;
}

/** Why records left the queue without being delivered. */
export type DropReason = 'queue-full' | 'disk-full' | 'max-age' | 'dead-letter-overflow' | 'damaged-file';

export interface QueueOptions {
  /** How long a claim holds records before another process may take them, in ms. */
  readonly leaseMs: number;
  readonly synchronous: 'normal' | 'full';
  readonly busyTimeout: number;
  /** Bound of the queue on disk (pages in use, WAL and shm), in bytes. */
  readonly maxQueueBytes: number;
  readonly overflow: 'drop-oldest' | 'drop-newest';
  /** Records older than this are dropped, in ms; undefined: no age bound. */
  readonly maxAge: number | undefined;
  /** Most rows the dead-letter table keeps; the oldest go first. */
  readonly maxDeadLetters: number;
  readonly onWarn: (message: string, cause?: unknown) => void;
  /** Called with every drop, exactly counted. */
  readonly onDrop?: (reason: DropReason, count: number) => void;
  /** Builds the record that tells the downstream about a gap ("N records dropped: reason"). */
  readonly notice?: (count: number, reason: DropReason) => string;
  /** The clock, in ms since the epoch; tests may bring their own. */
  readonly now?: () => number;
  /**
   * The destination records are filed under (a credential-free URL): this queue writes its records
   * with it and claims, counts and ships only those, and records with none (written before
   * destinations were kept). Undefined: every record.
   */
  readonly destination?: string;
}

/** Estimated bytes a row costs beyond its body (rowid, columns, b-tree cell). */
const ROW_OVERHEAD = 48;
const textBytes = (bodies: readonly string[]) => bodies.reduce((n, b) => n + Buffer.byteLength(b) + ROW_OVERHEAD, 0);
const batchBytes = (rows: RecordBatch) => rows.byteLength + rows.length * ROW_OVERHEAD;
/** What each row of `rows` costs, in order. */
const rowCosts = (rows: RecordBatch) => rows.sizes().map((n) => n + ROW_OVERHEAD);

/** A record that tells the downstream how many records were dropped, and why. */
interface Notice {
  readonly reason: DropReason;
  readonly count: number;
  readonly body: string;
}

/**
 * Rows per INSERT statement (its SQL grows ~20 bytes a row). A commit is one statement, so one trip
 * to SQLite's worker thread: each trip waits for the main thread to be free, and a busy logger would
 * otherwise hold every step of a multi-statement transaction back.
 */
const ROWS_PER_INSERT = 32_000;

/**
 * Chunk parts per INSERT: one parameter each, and the `CASE` that picks a row's part has one branch
 * each (so it is bounded: records longer than a chunk have a chunk each). A burst of 16,384 records
 * fills five 1 MiB chunks at ~300 bytes a record, 64 at ~4 KB; beyond that a commit is several
 * statements in one transaction. Measured alone at ~1 KB a record, 32 parts a statement rather than
 * 8 (one statement a burst instead of two): 6.2-6.5 → 5.8-6.2 µs of CPU a row.
 */
export const PARTS_PER_INSERT = 64;

/**
 * One INSERT of `rows`. Each chunk part is bound once, as bytes (?2, ?3, ...), and each row is a
 * VALUES row of integers: (its part's parameter, its 1-based offset there, its length), so no row is
 * a JS object or a parameter of its own. SQLite cuts each body out with `substr` and stores it as
 * TEXT (the bytes are UTF-8). VALUES rows are inserted in their order, so ids follow the order of
 * logging. node-sqlite3 copies the bound bytes before `run` returns, so the chunks can be reused.
 */
export function insertStatement(rows: RecordBatch, now: number, destination: string | null = null): [string, unknown[]] {
  const params: unknown[] = [now];
  let values = '';
  rows.forEachPart(
    (offset, length) => (values += `(${params.length + 1},${offset + 1},${length}),`),
    (bytes) => params.push(bytes),
  );
  let pick = '';
  for (let p = 2; p <= params.length; p++) pick += ` WHEN ${p} THEN ?${p}`;
  params.push(destination);
  const sql = `INSERT INTO records (body, created_at, destination) SELECT CAST(substr(CASE column1${pick} END, column2, column3) AS TEXT), ?1, ?${params.length} FROM (VALUES ${values.slice(0, -1)})`;
  return [sql, params];
}

/** The queue file's tables (bench/floor.ts makes the same file). */
export const SCHEMA = `
CREATE TABLE IF NOT EXISTS records (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  lease_owner TEXT,
  lease_until INTEGER NOT NULL DEFAULT 0,
  -- Set on the notice records that stand for dropped ones: what they report.
  notice_reason TEXT,
  notice_count INTEGER,
  -- The Vector the record was logged for (its URL without credentials); NULL: any.
  destination TEXT
);
CREATE TABLE IF NOT EXISTS counters (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY,
  body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  failed_at INTEGER NOT NULL,
  status INTEGER,
  reason TEXT NOT NULL
);
`;

export { prepareDatabaseFile } from './queue-file';

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

/** The file is not a queue: never retried, never touched. */
export class ForeignFileError extends Error {
  override readonly name = 'ForeignFileError';
}

function isCorrupt(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || (err as { corrupt?: boolean }).corrupt === true;
}

/**
 * `id` in `ids` as SQL: a range when the ids are consecutive (one process shipping its own claims:
 * the common case), else the list as JSON.
 */
export function idsIn(ids: readonly number[]): [sql: string, params: unknown[]] {
  const first = ids[0]!;
  const last = ids[ids.length - 1]!;
  if (last - first + 1 === ids.length && ids.every((id, i) => id === first + i)) return ['id BETWEEN ? AND ?', [first, last]];
  return ['id IN (SELECT value FROM json_each(?))', [JSON.stringify(ids)]];
}

/** The WAL's budget: a sixteenth of maxQueueBytes (or of the disk), within these bounds. */
const WAL_BUDGET_MIN = 8 * 1024;
const WAL_BUDGET_MAX = 4 * 1024 * 1024;
/** What the WAL's shared-memory index takes on disk (it grows by as much per ~4000 WAL frames). */
const SHM_BYTES = 32 * 1024;
/** Disk kept free beyond the WAL's allowance: for a checkpoint, the counters, a notice. */
const DISK_RESERVE = 64 * 1024;

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

const isFull = (err: unknown) => (err as { code?: unknown }).code === 'SQLITE_FULL';

/** An owner token (`host:pid:random`) of another process of this host that no longer runs. */
function ownerDied(owner: string): boolean {
  const [host, pid] = owner.split(':');
  return host === hostname() && Number(pid) !== process.pid && !pidAlive(Number(pid));
}

/** The durable queue: one SQLite file in WAL mode, shared safely by several processes. */
export class SqliteQueue implements Queue {
  /** Identifies this queue's leases: host, pid and a random part. */
  readonly owner = `${hostname()}:${process.pid}:${randomBytes(6).toString('hex')}`;
  private buffered: Array<{ rows: RecordBatch; resolve: () => void; reject: (err: unknown) => void; committed?: () => void }> = [];
  private writeScheduled = false;
  private closed = false;
  private readonly now: () => number;
  private pageSize = 4096;
  /** The ack waiting for its turn on the connection, which later acks join. */
  private waitingAck: { parts: Array<readonly number[]>; done: Promise<number | Set<number>> } | undefined;
  /**
   * Drops not yet told downstream, not yet added to the file's `unreported:<reason>` counters. The
   * file keeps what no notice has told yet, so any process that writes or claims next (also after
   * a restart) ships the notice; a notice's insert takes its count off in the same transaction.
   */
  private readonly unreported = new Map<DropReason, number>();
  /** The file may hold unreported drops: true at open and after a drop, false once none was found. */
  private mayHaveUnreported = true;

  private constructor(
    private readonly conn: Connection,
    private readonly options: QueueOptions,
    private readonly file: string,
  ) {
    this.now = options.now ?? Date.now;
    // A sixteenth of what the queue can take: maxQueueBytes, or the disk when that is smaller.
    let disk = Number.POSITIVE_INFINITY;
    try {
      const fs = statfsSync(dirname(file));
      disk = fs.bavail * fs.bsize + sizeOf(file) + sizeOf(`${file}-wal`);
    } catch {
      // no statfs: maxQueueBytes alone
    }
    this.walBudget = Math.min(WAL_BUDGET_MAX, Math.max(WAL_BUDGET_MIN, Math.floor(Math.min(options.maxQueueBytes, disk) / 16)));
  }

  /** @internal A test seam: the queue's own connection (to set a page limit, or watch its statements). */
  get connection(): Connection {
    return this.conn;
  }

  /** Opens (or creates) the queue. A corrupt file is set aside, renamed and kept, and a new one is made. */
  static async open(file: string, options: QueueOptions): Promise<SqliteQueue> {
    try {
      return await SqliteQueue.openOnce(file, options);
    } catch (err) {
      // Only a file that is recognisably ours is set aside; any other is left as it is.
      if (!isCorrupt(err) || fileKind(file) !== 'ours') throw err;
      const aside = `${file}.corrupt-${Date.now()}`;
      for (const suffix of ['', '-wal', '-shm']) {
        if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
      }
      prepareDatabaseFile(file);
      const queue = await SqliteQueue.openOnce(file, options);
      const { saved, lost } = await queue.salvage(aside);
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
  private async salvage(aside: string): Promise<{ saved: number; lost: number }> {
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
          await this.restore(group, destination ?? undefined);
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
    if (lost > 0) {
      await this.conn.exclusive(async () => {
        this.dropped('damaged-file', lost);
        await this.saveCounters();
      });
    }
    return { saved, lost };
  }

  /**
   * Reads, before anything is written, whether the file is a queue: marked as one, or unmarked with
   * no table but the queue's (a new file, or one written by an older version), which is marked now.
   * Any other file is refused untouched.
   */
  private static async checkMark(conn: Connection, file: string): Promise<void> {
    const id = (await conn.get<{ application_id: number }>('PRAGMA application_id'))?.application_id ?? 0;
    if (id === APPLICATION_ID) return;
    const tables = id === 0 ? await conn.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'") : [];
    if (id !== 0 || tables.some((t) => !QUEUE_TABLES.has(t.name))) {
      throw new ForeignFileError(`${file} is a SQLite file of another application, not a winston-vector queue; it was left as it is`);
    }
    await conn.exec(`PRAGMA application_id = ${APPLICATION_ID}; PRAGMA user_version = ${SCHEMA_VERSION};`);
  }

  private static async openOnce(file: string, options: QueueOptions): Promise<SqliteQueue> {
    const conn = await Connection.open(file, options.busyTimeout);
    try {
      await SqliteQueue.checkMark(conn, file);
      await conn.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=${options.synchronous.toUpperCase()};`);
      // A process that had the file open died without closing it: check the file before trusting
      // it, so a truncated or damaged one is found here, not in the middle of a delivery. (A clean
      // history skips the check: it reads the whole file, seconds for a large backlog.)
      const crashed = await SqliteQueue.crashedOpeners(conn);
      if (crashed.length > 0) {
        const check = await conn.all<{ quick_check: string }>('PRAGMA quick_check(1)');
        if (check[0]?.quick_check !== 'ok') {
          throw Object.assign(new Error(`integrity check failed: ${check[0]?.quick_check ?? 'no answer'}`), { corrupt: true });
        }
      }
      await conn.exec(SCHEMA);
      const columns = await conn.all<{ name: string }>('SELECT name FROM pragma_table_info(\'records\')');
      if (!columns.some((c) => c.name === 'destination')) await conn.exec('ALTER TABLE records ADD COLUMN destination TEXT');
      const queue = new SqliteQueue(conn, options, file);
      queue.pageSize = (await conn.get<{ page_size: number }>('PRAGMA page_size'))?.page_size ?? 4096;
      // The WAL is checkpointed once it holds this much, and truncated back to it: it counts
      // against maxQueueBytes (and the disk), so it must stay small.
      await conn.exec(`PRAGMA wal_autocheckpoint = ${Math.max(1, Math.floor(queue.walBudget / queue.pageSize))}; PRAGMA journal_size_limit = ${queue.walBudget};`);
      if (crashed.length > 0) await conn.run('DELETE FROM state WHERE key IN (SELECT value FROM json_each(?))', [JSON.stringify(crashed)]);
      await conn.run('INSERT OR REPLACE INTO state (key, value, at) VALUES (?, ?, ?)', [`open:${queue.owner}`, 'open', queue.now()]);
      await queue.reclaimFromDeadProcesses();
      return queue;
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
  }

  /** `open:` marks left in the file by processes of this host that no longer run. */
  private static async crashedOpeners(conn: Connection): Promise<string[]> {
    let rows: Array<{ key: string }>;
    try {
      rows = await conn.all<{ key: string }>("SELECT key FROM state WHERE key LIKE 'open:%'");
    } catch (err) {
      if (isCorrupt(err)) throw err;
      return []; // a new file: no state table yet
    }
    return rows.map((r) => r.key).filter((key) => ownerDied(key.slice('open:'.length)));
  }

  append(records: RecordBatch | readonly string[], committed?: () => void): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    const rows = records instanceof RecordBatch ? records : RecordBatch.of(records);
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new VectorQueueError('the queue is closed'));
        return;
      }
      this.buffered.push({ rows, resolve, reject, committed });
      if (!this.writeScheduled) {
        this.writeScheduled = true;
        void this.conn.exclusive(() => this.writeBuffered());
      }
    });
  }

  /**
   * Everything appended while the previous commit ran goes into one transaction. The queue's bound
   * and a full disk are handled here by the overflow policy: the caller's write never fails for them.
   */
  private async writeBuffered(): Promise<void> {
    this.writeScheduled = false;
    const items = this.buffered;
    this.buffered = [];
    let rows = RecordBatch.concat(items.map((i) => i.rows));
    const hooks = items.flatMap((i) => (i.committed ? [i.committed] : []));
    const committed = hooks.length === 0 ? undefined : () => hooks.forEach((h) => h());
    try {
      rows = await this.makeRoom(rows);
      const notices = this.mayHaveUnreported ? await this.takeNotices(rows, await this.room()) : [];
      try {
        await this.insertAll(rows, notices, undefined, committed);
      } catch (err) {
        if (!isFull(err)) throw err;
        // The disk (or SQLite's page limit) is full: the WAL's space first, then the policy decides who goes.
        await this.checkpoint();
        const attempt = () =>
          this.insertAll(rows, notices, undefined, committed).then(
            () => true,
            (e: unknown) => {
              if (!isFull(e)) throw e;
              return false;
            },
          );
        let written = await attempt();
        if (!written && this.options.overflow === 'drop-oldest') {
          const need = batchBytes(rows) * 2 + 16 * this.pageSize;
          if ((await this.dropOldest(need, 'disk-full').catch((e: unknown) => (isFull(e) ? 0 : Promise.reject(e)))) > 0) {
            await this.checkpoint();
            written = await attempt();
          }
        }
        // The notices' counts were taken off inside the transaction that failed: still in the file.
        if (!written) this.dropped('disk-full', rows.length);
      }
      await this.saveCounters().catch(() => undefined);
      await this.trimWal();
      for (const item of items) item.resolve();
    } catch (err) {
      for (const item of items) item.reject(err);
    }
  }

  /**
   * Commits records another process wrote out at its exit (lib/queue/spill.ts), under the destination
   * they were logged for (undefined: this queue's).
   */
  restore(rows: readonly string[], destination: string | undefined): Promise<void> {
    return this.conn.exclusive(() => this.insertAll(RecordBatch.of(rows), [], destination));
  }

  private async insertAll(rows: RecordBatch, notices: readonly Notice[] = [], destination = this.options.destination, committed?: () => void): Promise<void> {
    if (rows.length === 0 && notices.length === 0) {
      committed?.(); // every row was dropped (and counted): nothing is left to commit
      return;
    }
    const now = this.now();
    const parts = rows.split(ROWS_PER_INSERT, PARTS_PER_INSERT);
    if (parts.length === 1 && notices.length === 0) {
      await this.insert(parts[0]!, now, destination, committed);
      return;
    }
    await this.conn.transaction(async () => {
      for (const n of notices) {
        await this.conn.run('INSERT INTO records (body, created_at, notice_reason, notice_count, destination) VALUES (?, ?, ?, ?, ?)', [
          n.body,
          now,
          n.reason,
          n.count,
          this.options.destination ?? null,
        ]);
        await this.conn.run('UPDATE counters SET value = value - ? WHERE name = ?', [n.count, `unreported:${n.reason}`]);
      }
      for (const part of parts) await this.insert(part, now, destination);
    }, committed);
  }

  /**
   * Bytes that may still be written. Under `maxQueueBytes`: the pages in use, the shared-memory
   * file, and what the WAL may hold after a commit (it is truncated back to twice its budget)
   * count. On the disk: what is free, plus the pages SQLite can reuse, less that WAL allowance and a
   * reserve, so there is always room to delete, and to move the WAL into the file.
   */
  private async room(): Promise<number> {
    const row = await this.conn.get<{ used: number; free: number }>(
      'SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()) AS used, (SELECT freelist_count FROM pragma_freelist_count()) AS free',
    );
    const pages = (row?.used ?? 0) * this.pageSize;
    const wal = sizeOf(`${this.file}-wal`);
    const shm = sizeOf(`${this.file}-shm`);
    this.usage = pages + wal + shm;
    const residual = 2 * this.walBudget;
    const byBound = this.options.maxQueueBytes - pages - Math.max(shm, SHM_BYTES) - residual;
    let byDisk = Number.POSITIVE_INFINITY;
    try {
      const fs = statfsSync(dirname(this.file));
      byDisk = fs.bavail * fs.bsize + wal + (row?.free ?? 0) * this.pageSize - residual - DISK_RESERVE;
    } catch {
      // no statfs here: SQLITE_FULL is still handled
    }
    this.diskBound = byDisk < byBound;
    const room = Math.min(byBound, byDisk);
    this.measured = { at: this.now(), room, since: 0 };
    return room;
  }

  /** Bytes the queue takes on disk at the last measure: pages in use, WAL and shm. */
  private usage = 0;
  /** The last measure's room was set by the disk, not by `maxQueueBytes`. */
  private diskBound = false;
  /** Bytes the WAL may hold before it is checkpointed (and truncated back to). */
  private readonly walBudget: number;
  /** drop-newest dropped for lack of room: it keeps dropping until a quarter of the bound is free. */
  private full = false;

  /** The last measure of the room, and the bytes written since: asking on every commit costs. */
  private measured = { at: 0, room: 0, since: 0 };

  /**
   * `room()` when the queue may be near its bound (or the last measure is over a second old, since
   * other processes may share the file and the disk); otherwise the last room less what was
   * written since, which is enough to know that `incoming` fits.
   */
  private async roomFor(incoming: number): Promise<number> {
    const m = this.measured;
    const left = m.room - m.since;
    if (this.now() - m.at < 1000 && left - incoming > m.room * 0.25) return left;
    return this.room();
  }

  /**
   * A large transaction (a commit, a claim, a delete) leaves a large WAL behind: its space is given
   * back now, not at the next checkpoint. Call inside `exclusive`.
   */
  private async trimWal(): Promise<void> {
    if (sizeOf(`${this.file}-wal`) > 2 * this.walBudget) await this.checkpoint();
  }

  /** Moves the WAL into the file and truncates it, giving its space back (after deletes, on a full disk). */
  private async checkpoint(): Promise<void> {
    await this.conn.exec('PRAGMA wal_checkpoint(TRUNCATE)').catch(() => undefined);
  }

  /** Applies the overflow policy so that `rows` fit; returns the rows that will be written. */
  private async makeRoom(rows: RecordBatch): Promise<RecordBatch> {
    // A commit takes its bytes twice for a while: in the WAL, then in the file once checkpointed.
    const incoming = 2 * batchBytes(rows);
    let room = this.full ? await this.room() : await this.roomFor(incoming);
    if (this.full && room >= Math.max(incoming, this.options.maxQueueBytes / 4)) this.full = false;
    if (!this.full && incoming <= room) {
      this.measured.since += incoming;
      return rows;
    }
    const reason = (): DropReason => (this.diskBound ? 'disk-full' : 'queue-full');
    if (this.options.overflow === 'drop-oldest') {
      // Deleted rows free whole pages only once a page is empty, so measure again after each step;
      // every older record goes before any of the incoming ones.
      while (incoming > room) {
        const need = Math.max(incoming - room, 4 * this.pageSize);
        // A DELETE needs WAL space too: on a full disk, checkpoint first and try once more.
        const freed = await this.dropOldest(need, reason()).catch(async (e: unknown) => {
          if (!isFull(e)) throw e;
          await this.checkpoint();
          return this.dropOldest(need, 'disk-full').catch((e2: unknown) => (isFull(e2) ? 0 : Promise.reject(e2)));
        });
        if (freed === 0) break;
        await this.checkpoint();
        room = await this.room();
      }
      if (incoming <= room) return rows;
      // More than the whole bound in one burst: keep its newest records.
      const costs = rowCosts(rows);
      let keep = rows.length;
      let bytes = 0;
      while (keep > 0 && bytes + 2 * costs[keep - 1]! <= room) bytes += 2 * costs[--keep]!;
      this.dropped(reason(), keep);
      return rows.slice(keep);
    }
    // drop-newest: what fits of the oldest, then nothing until there is room again (no record
    // newer than a dropped one is kept while the queue stays full).
    const costs = rowCosts(rows);
    let keep = 0;
    let bytes = 0;
    if (!this.full) while (keep < rows.length && bytes + 2 * costs[keep]! <= room) bytes += 2 * costs[keep++]!;
    if (keep < rows.length) this.full = true;
    this.dropped(reason(), rows.length - keep);
    return rows.slice(0, keep);
  }


  /**
   * Deletes the oldest records until about `bytes` are freed; returns how many went. Notices
   * caught in the range are deleted too, and what they reported is reported again. Records under a
   * lease are in a request right now: they are left to its answer (a 2xx deletes them), so no
   * record is both delivered and counted as dropped.
   */
  private async dropOldest(bytes: number, reason: DropReason): Promise<number> {
    let freed = 0;
    let lastId = 0;
    const now = this.now();
    while (freed < bytes) {
      const page = await this.conn.all<{ id: number; n: number }>(
        'SELECT id, length(CAST(body AS BLOB)) AS n FROM records WHERE id > ? AND lease_until < ? ORDER BY id LIMIT 1000',
        [lastId, now],
      );
      if (page.length === 0) break;
      for (const { id, n } of page) {
        lastId = id;
        freed += n + ROW_OVERHEAD;
        if (freed >= bytes) break;
      }
    }
    if (lastId === 0) return 0;
    const carried = await this.conn.all<{ notice_reason: DropReason; n: number }>(
      `DELETE FROM records WHERE id <= ? AND lease_until < ? AND notice_reason IS NOT NULL RETURNING notice_reason, notice_count AS n`,
      [lastId, now],
    );
    for (const c of carried) this.unreport(c.notice_reason, c.n);
    const count = await this.conn.run('DELETE FROM records WHERE id <= ? AND lease_until < ?', [lastId, now]);
    this.dropped(reason, count);
    return count + carried.length;
  }

  private dropped(reason: DropReason, count: number): void {
    if (count <= 0) return;
    this.unreport(reason, count);
    this.counted.set(reason, (this.counted.get(reason) ?? 0) + count);
    this.options.onDrop?.(reason, count);
  }

  /** Drops not yet added to the `counters` table (it keeps them across runs, for `status`). */
  private readonly counted = new Map<string, number>();

  /** Adds the drops of the operation that just ran to the file's counters. Call inside `exclusive`. */
  private async saveCounters(): Promise<void> {
    if (this.counted.size === 0 && this.unreported.size === 0) return;
    const entries = [
      ...[...this.counted].map(([name, n]) => [`dropped:${name}`, n] as const),
      ...[...this.unreported].map(([name, n]) => [`unreported:${name}`, n] as const),
    ];
    // One statement (atomic by itself, and usable inside a caller's transaction).
    await this.conn.run(
      `INSERT INTO counters (name, value) VALUES ${entries.map(() => '(?, ?)').join(', ')} ON CONFLICT(name) DO UPDATE SET value = value + excluded.value`,
      entries.flat(),
    );
    // Cleared only once written: on a full disk they wait for the next write.
    this.counted.clear();
    this.unreported.clear();
  }

  private lastSuccessNoted = 0;
  /** The latest success not yet written (they are written at most every 5 s): written at close. */
  private unwrittenSuccess: { value: string; at: number } | undefined;

  note(key: 'last_error' | 'last_success', value: string, at = this.now()): void {
    if (this.closed) return;
    const now = this.now();
    // A success is written at most every 5 s: it would otherwise be one more write per batch. The
    // latest one is kept and written at close, so `status` agrees with `stats()` after a run.
    if (key === 'last_success') {
      if (now - this.lastSuccessNoted < 5000) {
        this.unwrittenSuccess = { value, at };
        return;
      }
      this.lastSuccessNoted = now;
      this.unwrittenSuccess = undefined;
    }
    void this.conn.exclusive(() => this.writeState(key, value, at)).catch(() => undefined);
  }

  private writeState(key: string, value: string, at: number): Promise<number> {
    return this.conn.run('INSERT INTO state (key, value, at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, at = excluded.at', [key, value, at]);
  }

  private unreport(reason: DropReason, count: number): void {
    this.unreported.set(reason, (this.unreported.get(reason) ?? 0) + count);
    this.mayHaveUnreported = true;
  }

  /**
   * The notices for the drops the file holds as not yet reported (this process's and any other's),
   * one per reason, when they fit (under `drop-oldest` they always go in: they are what tells the
   * downstream about the gap). Their counts come off when they are inserted. Call inside `exclusive`.
   */
  private async takeNotices(rows: RecordBatch, room: number): Promise<Notice[]> {
    if (!this.options.notice) return [];
    try {
      await this.saveCounters();
    } catch {
      return []; // a full disk: they stay counted in memory, and are told later
    }
    const pending = await this.conn.all<{ name: string; value: number }>("SELECT name, value FROM counters WHERE name LIKE 'unreported:%' AND value > 0");
    if (pending.length === 0) {
      this.mayHaveUnreported = false;
      return [];
    }
    const notices = pending.map((p) => {
      const reason = p.name.slice('unreported:'.length) as DropReason;
      return { reason, count: p.value, body: this.options.notice!(p.value, reason) };
    });
    const need = textBytes(notices.map((x) => x.body)) + batchBytes(rows);
    if (need > room && this.options.overflow === 'drop-newest') return [];
    return notices;
  }

  /** Ships the notices the file holds, when there is room for them: before a claim, so it takes them. */
  private async tellDrops(): Promise<void> {
    if (!this.mayHaveUnreported) return;
    const notices = await this.takeNotices(RecordBatch.empty, await this.room());
    if (notices.length > 0) await this.insertAll(RecordBatch.empty, notices).catch((err: unknown) => {
      if (!isFull(err)) throw err;
    });
  }

  private insert(rows: RecordBatch, now: number, destination: string | undefined, committed?: () => void): Promise<number> {
    const [sql, params] = insertStatement(rows, now, destination ?? null);
    return this.conn.run(sql, params, committed);
  }

  claim(limit: number): Promise<QueuedRecord[]> {
    return this.conn.exclusive(async () => {
      const now = this.now();
      await this.expire(now);
      await this.tellDrops();
      const [mine, dest] = this.mine();
      const lease = (n: number) =>
        this.conn.all<QueuedRecord>(
          `UPDATE records SET lease_owner = ?, lease_until = ?
           WHERE id IN (SELECT id FROM records WHERE lease_until < ? AND ${mine} ORDER BY id LIMIT ?)
           RETURNING id, body`,
          [this.owner, now + this.options.leaseMs, now, ...dest, n],
        );
      let rows: QueuedRecord[] | undefined;
      // A claim rewrites its rows into the WAL: on a full disk, give the WAL's space back and claim
      // fewer at a time (the scheduler takes what it gets).
      for (let n = limit; rows === undefined; n = Math.ceil(n / 4)) {
        try {
          rows = await lease(n);
        } catch (err) {
          if (!isFull(err) || n === 1) throw err;
          await this.checkpoint();
        }
      }
      await this.trimWal();
      return rows.sort((a, b) => a.id - b.id);
    });
  }

  /** Drops records older than `maxAge` (oldest first, never one in flight elsewhere). */
  private async expire(now: number): Promise<void> {
    if (this.options.maxAge === undefined) return;
    const cutoff = now - this.options.maxAge;
    for (;;) {
      const n = await this.conn.run(
        `DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT 1000)
         AND created_at < ? AND lease_until < ? AND notice_reason IS NULL`,
        [cutoff, now],
      );
      this.dropped('max-age', n);
      if (n < 1000) break;
    }
    await this.saveCounters();
  }

  renew(ids: readonly number[]): Promise<number[]> {
    if (ids.length === 0) return Promise.resolve([]);
    const [where, params] = this.held(ids);
    return this.conn.exclusive(async () => {
      const rows = await this.conn.all<{ id: number }>(`UPDATE records SET lease_until = ? WHERE ${where} RETURNING id`, [
        this.now() + this.options.leaseMs,
        ...params,
      ]);
      return rows.map((r) => r.id).sort((a, b) => a - b);
    });
  }

  /**
   * Acks wait their turn behind the connection's other operations (a commit of new records, a
   * claim); those that arrive meanwhile join the waiting one: one DELETE for all of them, so a burst
   * of deliveries does not queue a statement per batch ahead of the next claim.
   */
  ack(ids: readonly number[]): Promise<number> {
    if (ids.length === 0) return Promise.resolve(0);
    let waiting = this.waitingAck;
    if (!waiting) {
      const parts: Array<readonly number[]> = [];
      const done = this.conn.exclusive(async (): Promise<number | Set<number>> => {
        if (this.waitingAck?.parts === parts) this.waitingAck = undefined;
        // Alone, the count is the answer; merged, the ids tell each caller its own.
        let out: number | Set<number>;
        if (parts.length === 1) out = await this.deleteHeld(parts[0]!);
        else {
          const [where, params] = this.held(parts.flat());
          const gone = await this.conn.all<{ id: number }>(`DELETE FROM records WHERE ${where} RETURNING id`, params);
          out = new Set(gone.map((r) => r.id));
        }
        await this.trimWal();
        return out;
      });
      waiting = this.waitingAck = { parts, done };
    }
    waiting.parts.push(ids);
    // Each caller learns how many of its own ids were still held.
    return waiting.done.then((gone) => (typeof gone === 'number' ? gone : ids.reduce((n, id) => n + (gone.has(id) ? 1 : 0), 0)));
  }

  /** Deletes those of `ids` this queue still holds the lease on. Call inside `exclusive`. */
  private deleteHeld(ids: readonly number[]): Promise<number> {
    const [where, params] = this.held(ids);
    return this.conn.run(`DELETE FROM records WHERE ${where}`, params);
  }

  /** Those of `ids` whose lease this queue holds, as SQL and its parameters. */
  private held(ids: readonly number[]): [sql: string, params: unknown[]] {
    const [where, params] = idsIn(ids);
    return [`lease_owner = ? AND ${where}`, [this.owner, ...params]];
  }

  /** Frees every lease `owner` holds. Call inside `exclusive`. */
  private freeLeasesOf(owner: string): Promise<number> {
    return this.conn.run('UPDATE records SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?', [owner]);
  }

  release(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    const [where, params] = this.held(ids);
    return this.conn.exclusive(async () => {
      await this.conn.run(`UPDATE records SET lease_owner = NULL, lease_until = 0 WHERE ${where}`, params);
    });
  }

  deadLetter(ids: readonly number[], status: number | undefined, reason: string): Promise<number> {
    if (ids.length === 0) return Promise.resolve(0);
    const [where, params] = this.held(ids);
    return this.conn.exclusive(() =>
      this.conn.transaction(async () => {
        await this.conn.run(
          `INSERT OR REPLACE INTO dead_letters (id, body, created_at, failed_at, status, reason)
           SELECT id, body, created_at, ?, ?, ? FROM records WHERE ${where}`,
          [this.now(), status ?? null, reason, ...params],
        );
        const moved = await this.deleteHeld(ids);
        const trimmed = await this.conn.run(
          'DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY failed_at DESC, id DESC LIMIT -1 OFFSET ?)',
          [this.options.maxDeadLetters],
        );
        this.dropped('dead-letter-overflow', trimmed);
        await this.saveCounters();
        return moved;
      }),
    );
  }

  /**
   * Leases held by a process of this host that no longer runs (killed, crashed) are freed at once,
   * so a restarted service ships what its predecessor had claimed without waiting for the lease.
   */
  async reclaimFromDeadProcesses(): Promise<number> {
    return this.conn.exclusive(async () => {
      const owners = await this.conn.all<{ lease_owner: string }>(
        'SELECT DISTINCT lease_owner FROM records WHERE lease_owner IS NOT NULL AND lease_until >= ?',
        [this.now()],
      );
      let freed = 0;
      for (const { lease_owner: owner } of owners) {
        if (!ownerDied(owner)) continue;
        freed += await this.freeLeasesOf(owner);
      }
      return freed;
    });
  }

  /** SQL that keeps this queue's records (its destination's, and those with none), and its parameters. */
  private mine(): [sql: string, params: unknown[]] {
    const d = this.options.destination;
    return d === undefined ? ['1', []] : ['(destination IS NULL OR destination = ?)', [d]];
  }

  async maxId(): Promise<number> {
    const [mine, dest] = this.mine();
    const row = await this.conn.exclusive(() => this.conn.get<{ n: number }>(`SELECT coalesce(max(id), 0) AS n FROM records WHERE ${mine}`, dest));
    return row?.n ?? 0;
  }

  /** Records of this queue's destination waiting (from any process sharing the file). */
  async pendingCount(): Promise<number> {
    const [mine, dest] = this.mine();
    const row = await this.conn.exclusive(() => this.conn.get<{ n: number }>(`SELECT count(*) AS n FROM records WHERE ${mine}`, dest));
    return row?.n ?? 0;
  }

  async stats(): Promise<{ pending: number; oldestPendingAt: number | null; deadLetters: number; queueBytes: number }> {
    return this.conn.exclusive(async () => {
      const [mine, dest] = this.mine();
      const row = await this.conn.get<{ n: number; oldest: number | null; dead: number }>(
        `SELECT (SELECT count(*) FROM records WHERE ${mine}) AS n, (SELECT created_at FROM records WHERE ${mine} ORDER BY id LIMIT 1) AS oldest, (SELECT count(*) FROM dead_letters) AS dead`,
        [...dest, ...dest],
      );
      await this.room(); // measures the usage
      return {
        pending: row?.n ?? 0,
        oldestPendingAt: row?.oldest ?? null,
        deadLetters: row?.dead ?? 0,
        queueBytes: this.usage,
      };
    });
  }

  /** Frees this queue's leases (so the next start ships them at once) and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.conn
      .exclusive(async () => {
        await this.freeLeasesOf(this.owner);
        await this.conn.run('DELETE FROM state WHERE key = ?', [`open:${this.owner}`]);
        const success = this.unwrittenSuccess;
        if (success) await this.writeState('last_success', success.value, success.at);
      })
      .catch((err) => this.options.onWarn('could not free leases on close', err));
    await this.conn.close();
  }
}
