import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { idsIn } from '../queue/sql';
import { Connection } from '../queue/sqlite';

/** The queue file is missing, or it is not a winston-vector queue. */
export class QueueFileError extends Error {
  override readonly name = 'QueueFileError';
}

export interface QueueStatus {
  readonly dbPath: string;
  readonly pending: number;
  /** Pending records by the destination they were logged for (`(any)`: from versions that kept none). */
  readonly destinations: Readonly<Record<string, number>>;
  /** Bytes of the pending records' bodies. */
  readonly pendingBytes: number;
  readonly oldestPendingAgeMs: number | null;
  readonly deadLetters: number;
  /** Records dropped by the bounds, by reason, over the file's life. */
  readonly dropped: Readonly<Record<string, number>>;
  readonly lastError: { readonly message: string; readonly at: string } | null;
  readonly lastSuccess: { readonly message: string; readonly at: string } | null;
  /** Pending records claimed by a process now sending them (its lease not yet over), by owner. */
  readonly held: ReadonlyArray<{ readonly owner: string; readonly host: string; readonly pid: number | undefined; readonly records: number; readonly leaseEndsInMs: number }>;
}

export interface DeadLetter {
  readonly id: number;
  readonly failedAt: string;
  readonly status: number | null;
  /** The receiver's answer that rejected it. */
  readonly reason: string;
  readonly body: string;
}

/**
 * Opens an existing queue file for inspection, without creating one: a missing file, a file that is
 * not SQLite, or a SQLite file without the queue's tables is a {@link QueueFileError}.
 */
export async function openQueueFile(dbPath: string): Promise<Connection> {
  const file = resolve(dbPath);
  if (!existsSync(file)) throw new QueueFileError(`no queue file at ${file}`);
  let conn: Connection;
  try {
    conn = await Connection.open(file, 5000, false);
  } catch (err) {
    throw new QueueFileError(`cannot open ${file}: ${(err as Error).message}`);
  }
  try {
    const tables = await conn.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'");
    const names = new Set(tables.map((t) => t.name));
    if (!names.has('records') || !names.has('dead_letters')) {
      throw new QueueFileError(`${file} is a SQLite file, but not a winston-vector queue`);
    }
    return conn;
  } catch (err) {
    await conn.close().catch(() => undefined);
    if (err instanceof QueueFileError) throw err;
    throw new QueueFileError(`${file} is not a winston-vector queue: ${(err as Error).message}`);
  }
}

async function withQueueFile<T>(dbPath: string, fn: (conn: Connection) => Promise<T>): Promise<T> {
  const conn = await openQueueFile(dbPath);
  try {
    return await conn.exclusive(() => fn(conn));
  } finally {
    await conn.close();
  }
}

/** A 0-byte file: a process died before it wrote the schema. An empty queue, not a foreign file. */
function isEmptyFile(dbPath: string): boolean {
  try {
    return statSync(resolve(dbPath)).size === 0;
  } catch {
    return false;
  }
}

export async function queueStatus(dbPath: string, now = Date.now()): Promise<QueueStatus> {
  if (isEmptyFile(dbPath)) {
    return { dbPath: resolve(dbPath), pending: 0, destinations: {}, pendingBytes: 0, oldestPendingAgeMs: null, deadLetters: 0, dropped: {}, lastError: null, lastSuccess: null, held: [] };
  }
  return withQueueFile(dbPath, async (conn) => {
    const row = await conn.get<{ n: number; bytes: number | null; oldest: number | null; dead: number }>(
      `SELECT count(*) AS n, sum(length(CAST(body AS BLOB))) AS bytes,
              (SELECT created_at FROM records ORDER BY id LIMIT 1) AS oldest,
              (SELECT count(*) FROM dead_letters) AS dead
       FROM records`,
    );
    const byDestination = await conn
      .all<{ destination: string | null; n: number }>('SELECT destination, count(*) AS n FROM records GROUP BY destination ORDER BY min(id)')
      .catch(() => []);
    const counters = await conn.all<{ name: string; value: number }>("SELECT name, value FROM counters WHERE name LIKE 'dropped:%'").catch(() => []);
    const state = await conn.all<{ key: string; value: string; at: number }>('SELECT key, value, at FROM state').catch(() => []);
    const leases = await conn
      .all<{ owner: string; n: number; until: number }>(
        'SELECT lease_owner AS owner, count(*) AS n, max(lease_until) AS until FROM records WHERE lease_owner IS NOT NULL AND lease_until >= ? GROUP BY lease_owner ORDER BY min(id)',
        [now],
      )
      .catch(() => []);
    const entry = (key: string) => {
      const s = state.find((x) => x.key === key);
      return s ? { message: s.value, at: new Date(s.at).toISOString() } : null;
    };
    return {
      dbPath: resolve(dbPath),
      pending: row?.n ?? 0,
      destinations: Object.fromEntries(byDestination.map((d) => [d.destination ?? '(any)', d.n])),
      pendingBytes: row?.bytes ?? 0,
      oldestPendingAgeMs: row?.oldest == null ? null : Math.max(0, now - row.oldest),
      deadLetters: row?.dead ?? 0,
      dropped: Object.fromEntries(counters.map((c) => [c.name.slice('dropped:'.length), c.value])),
      lastError: entry('last_error'),
      lastSuccess: entry('last_success'),
      held: leases.map((l) => {
        // Owners are `host:pid:random` (lib/queue/queue.ts).
        const [host = l.owner, pid] = l.owner.split(':');
        const n = Number(pid);
        return { owner: l.owner, host, pid: Number.isInteger(n) ? n : undefined, records: l.n, leaseEndsInMs: Math.max(0, l.until - now) };
      }),
    };
  });
}

export async function listDeadLetters(dbPath: string, limit = 100): Promise<DeadLetter[]> {
  if (isEmptyFile(dbPath)) return [];
  return withQueueFile(dbPath, async (conn) => {
    const rows = await conn.all<{ id: number; failed_at: number; status: number | null; reason: string; body: string }>(
      'SELECT id, failed_at, status, reason, body FROM dead_letters ORDER BY id LIMIT ?',
      [limit],
    );
    return rows.map((r) => ({ id: r.id, failedAt: new Date(r.failed_at).toISOString(), status: r.status, reason: r.reason, body: r.body }));
  });
}

function selection(ids: readonly number[] | undefined): { where: string; params: unknown[] } {
  if (!ids || ids.length === 0) return { where: '', params: [] };
  const [where, params] = idsIn(ids);
  return { where: `WHERE ${where}`, params };
}

/** Puts dead letters (all, or `ids`) back at the end of the queue; returns how many. */
export async function retryDeadLetters(dbPath: string, ids?: readonly number[]): Promise<number> {
  if (isEmptyFile(dbPath)) return 0;
  const { where, params } = selection(ids);
  return withQueueFile(dbPath, (conn) =>
    conn.transaction(async () => {
      await conn.run(`INSERT INTO records (body, created_at) SELECT body, created_at FROM dead_letters ${where} ORDER BY id`, params);
      return conn.run(`DELETE FROM dead_letters ${where}`, params);
    }),
  );
}

/** Deletes dead letters (all, or `ids`); returns how many. */
export async function purgeDeadLetters(dbPath: string, ids?: readonly number[]): Promise<number> {
  if (isEmptyFile(dbPath)) return 0;
  const { where, params } = selection(ids);
  return withQueueFile(dbPath, (conn) => conn.run(`DELETE FROM dead_letters ${where}`, params));
}
