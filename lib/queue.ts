import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, renameSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { VectorQueueError } from './errors';
import { Connection } from './sqlite';

/** One record waiting in the queue, as it will be sent. */
export interface QueuedRecord {
  readonly id: number;
  readonly body: string;
}

/** What the scheduler needs of a queue; the SQLite queue is one, tests may bring another. */
export interface Queue {
  /** Commits the records; resolves once they are durable. */
  append(bodies: string[]): Promise<void>;
  /** Leases up to `limit` of the oldest records that nobody else holds. */
  claim(limit: number): Promise<QueuedRecord[]>;
  /** Deletes delivered records this queue still holds the lease on. */
  ack(ids: readonly number[]): Promise<number>;
  /** Gives the lease back so the records are claimed again, oldest first. */
  release(ids: readonly number[]): Promise<void>;
  /** Moves records that stay rejected to the dead-letter table. */
  deadLetter(ids: readonly number[], status: number | undefined, reason: string): Promise<number>;
  /** The newest record id now in the queue, 0 when empty. */
  maxId(): Promise<number>;
}

export interface QueueOptions {
  /** How long a claim holds records before another process may take them, in ms. */
  readonly leaseMs: number;
  readonly synchronous: 'normal' | 'full';
  readonly busyTimeout: number;
  readonly onWarn: (message: string, cause?: unknown) => void;
}

/** Rows per INSERT statement (2 parameters a row, well under SQLite's 32766). */
const ROWS_PER_INSERT = 500;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS records (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  lease_owner TEXT,
  lease_until INTEGER NOT NULL DEFAULT 0
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

/**
 * Makes sure the database file can be created and is private to the user (0600; a directory we
 * create is 0700). Synchronous on purpose: it runs in the transport's constructor so a bad `dbPath`
 * fails there, naming the path.
 */
export function prepareDatabaseFile(dbPath: string): string {
  const file = resolve(dbPath);
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    closeSync(openSync(file, 'a', 0o600));
    chmodSync(file, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new VectorQueueError(`\`dbPath\` ${JSON.stringify(file)} cannot be used as the queue file (${code})`, { cause: err });
  }
  return file;
}

function isCorrupt(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB';
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The durable queue: one SQLite file in WAL mode, shared safely by several processes. */
export class SqliteQueue implements Queue {
  /** Identifies this queue's leases: host, pid and a random part. */
  readonly owner = `${hostname()}:${process.pid}:${randomBytes(6).toString('hex')}`;
  private buffered: Array<{ bodies: string[]; resolve: () => void; reject: (err: unknown) => void }> = [];
  private writeScheduled = false;
  private closed = false;

  private constructor(
    private readonly conn: Connection,
    private readonly options: QueueOptions,
  ) {}

  /** Opens (or creates) the queue. A corrupt file is set aside, renamed and kept, and a new one is made. */
  static async open(file: string, options: QueueOptions): Promise<SqliteQueue> {
    try {
      return await SqliteQueue.openOnce(file, options);
    } catch (err) {
      if (!isCorrupt(err)) throw err;
      const aside = `${file}.corrupt-${Date.now()}`;
      for (const suffix of ['', '-wal', '-shm']) {
        if (existsSync(file + suffix)) renameSync(file + suffix, aside + suffix);
      }
      options.onWarn(`queue file ${file} was unreadable; set aside as ${aside}, a new one was created`, err);
      prepareDatabaseFile(file);
      return SqliteQueue.openOnce(file, options);
    }
  }

  private static async openOnce(file: string, options: QueueOptions): Promise<SqliteQueue> {
    const conn = await Connection.open(file, options.busyTimeout);
    try {
      await conn.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=${options.synchronous.toUpperCase()};`);
      await conn.exec(SCHEMA);
      const queue = new SqliteQueue(conn, options);
      await queue.reclaimFromDeadProcesses();
      return queue;
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
  }

  append(bodies: string[]): Promise<void> {
    if (bodies.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new VectorQueueError('the queue is closed'));
        return;
      }
      this.buffered.push({ bodies, resolve, reject });
      if (!this.writeScheduled) {
        this.writeScheduled = true;
        void this.conn.exclusive(() => this.writeBuffered());
      }
    });
  }

  /** Everything appended while the previous commit ran goes into one transaction. */
  private async writeBuffered(): Promise<void> {
    this.writeScheduled = false;
    const items = this.buffered;
    this.buffered = [];
    const rows = items.length === 1 ? items[0]!.bodies : items.flatMap((i) => i.bodies);
    try {
      if (rows.length <= ROWS_PER_INSERT) await this.insert(rows, Date.now());
      else {
        const now = Date.now();
        await this.conn.transaction(async () => {
          for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) await this.insert(rows.slice(i, i + ROWS_PER_INSERT), now);
        });
      }
      for (const item of items) item.resolve();
    } catch (err) {
      for (const item of items) item.reject(err);
    }
  }

  private insert(rows: string[], now: number): Promise<number> {
    const params: unknown[] = new Array(rows.length * 2);
    for (let i = 0; i < rows.length; i++) {
      params[2 * i] = rows[i];
      params[2 * i + 1] = now;
    }
    const sql = `INSERT INTO records (body, created_at) VALUES ${'(?,?),'.repeat(rows.length - 1)}(?,?)`;
    return this.conn.run(sql, params);
  }

  claim(limit: number): Promise<QueuedRecord[]> {
    return this.conn.exclusive(async () => {
      const now = Date.now();
      const rows = await this.conn.all<QueuedRecord>(
        `UPDATE records SET lease_owner = ?, lease_until = ?
         WHERE id IN (SELECT id FROM records WHERE lease_until < ? ORDER BY id LIMIT ?)
         RETURNING id, body`,
        [this.owner, now + this.options.leaseMs, now, limit],
      );
      return rows.sort((a, b) => a.id - b.id);
    });
  }

  ack(ids: readonly number[]): Promise<number> {
    if (ids.length === 0) return Promise.resolve(0);
    return this.conn.exclusive(() =>
      this.conn.run('DELETE FROM records WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))', [
        this.owner,
        JSON.stringify(ids),
      ]),
    );
  }

  release(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.conn.exclusive(async () => {
      await this.conn.run(
        'UPDATE records SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))',
        [this.owner, JSON.stringify(ids)],
      );
    });
  }

  deadLetter(ids: readonly number[], status: number | undefined, reason: string): Promise<number> {
    if (ids.length === 0) return Promise.resolve(0);
    const idList = JSON.stringify(ids);
    return this.conn.exclusive(() =>
      this.conn.transaction(async () => {
        await this.conn.run(
          `INSERT OR REPLACE INTO dead_letters (id, body, created_at, failed_at, status, reason)
           SELECT id, body, created_at, ?, ?, ? FROM records WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))`,
          [Date.now(), status ?? null, reason, this.owner, idList],
        );
        return this.conn.run('DELETE FROM records WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))', [
          this.owner,
          idList,
        ]);
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
        [Date.now()],
      );
      let freed = 0;
      for (const { lease_owner: owner } of owners) {
        const [host, pid] = owner.split(':');
        if (host !== hostname() || Number(pid) === process.pid || pidAlive(Number(pid))) continue;
        freed += await this.conn.run('UPDATE records SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?', [owner]);
      }
      return freed;
    });
  }

  async maxId(): Promise<number> {
    const row = await this.conn.exclusive(() => this.conn.get<{ n: number }>('SELECT coalesce(max(id), 0) AS n FROM records'));
    return row?.n ?? 0;
  }

  async pendingCount(): Promise<number> {
    const row = await this.conn.exclusive(() => this.conn.get<{ n: number }>('SELECT count(*) AS n FROM records'));
    return row?.n ?? 0;
  }

  async stats(): Promise<{ pending: number; oldestPendingAt: number | null; deadLetters: number }> {
    return this.conn.exclusive(async () => {
      const row = await this.conn.get<{ n: number; oldest: number | null; dead: number }>(
        'SELECT (SELECT count(*) FROM records) AS n, (SELECT min(created_at) FROM records) AS oldest, (SELECT count(*) FROM dead_letters) AS dead',
      );
      return { pending: row?.n ?? 0, oldestPendingAt: row?.oldest ?? null, deadLetters: row?.dead ?? 0 };
    });
  }

  /** Frees this queue's leases (so the next start ships them at once) and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.conn
      .exclusive(() => this.conn.run('UPDATE records SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?', [this.owner]))
      .catch((err) => this.options.onWarn('could not free leases on close', err));
    await this.conn.close();
  }
}
