import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { RecordBatch } from '../delivery/batch';
import { VectorQueueError } from '../errors';
import { Drops, type DropReason, type Notice } from './drops';
import { ownerDied } from './queue-file';
import { batchBytes, commitBytes, commitCosts, ROW_OVERHEAD, Space } from './space';
import { idsIn, insertStatement, isFull, PARTS_PER_INSERT, ROWS_PER_INSERT, smallInsertStatement } from './sql';
import type { Connection } from './sqlite';

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

export type { DropReason } from './drops';

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

/** The durable queue: one SQLite file in WAL mode, shared safely by several processes. */
export class SqliteQueue implements Queue {
  /** Identifies this queue's leases: host, pid and a random part. */
  readonly owner = `${hostname()}:${process.pid}:${randomBytes(6).toString('hex')}`;
  private buffered: Array<{ rows: RecordBatch; resolve: () => void; reject: (err: unknown) => void; committed?: () => void }> = [];
  private writeScheduled = false;
  private closed = false;
  private readonly now: () => number;
  /** The ack waiting for its turn on the connection, which later acks join. */
  private waitingAck: { parts: Array<readonly number[]>; done: Promise<number | Set<number>> } | undefined;
  private constructor(
    private readonly conn: Connection,
    private readonly options: QueueOptions,
    file: string,
  ) {
    this.now = options.now ?? Date.now;
    this.space = new Space(conn, file, options.maxQueueBytes, this.now);
    this.drops = new Drops(conn, options.overflow, options.onDrop, options.notice);
  }

  /** @internal A test seam: the queue's own connection (to set a page limit, or watch its statements). */
  get connection(): Connection {
    return this.conn;
  }

  /**
   * @internal The queue on a connection whose file openQueue has checked: its WAL bounds, its mark
   * in the file (so a crash is told at the next open), and the leases of dead processes freed.
   */
  static async started(conn: Connection, options: QueueOptions, file: string, pageSize: number): Promise<SqliteQueue> {
    const queue = new SqliteQueue(conn, options, file);
    queue.space.pageSize = pageSize;
    // The WAL is checkpointed once it holds this much, and truncated back to it: it counts
    // against maxQueueBytes (and the disk), so it must stay small.
    const { walBudget } = queue.space;
    await conn.exec(`PRAGMA wal_autocheckpoint = ${Math.max(1, Math.floor(walBudget / pageSize))}; PRAGMA journal_size_limit = ${walBudget};`);
    await conn.run('INSERT OR REPLACE INTO state (key, value, at) VALUES (?, ?, ?)', [`open:${queue.owner}`, 'open', queue.now()]);
    await queue.reclaimFromDeadProcesses();
    return queue;
  }

  /** @internal Records of a damaged file that could not be read: counted as dropped, and told. */
  countDamaged(lost: number): Promise<void> {
    return this.conn.exclusive(async () => {
      this.drops.dropped('damaged-file', lost);
      await this.drops.save();
    });
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
      let notices: Notice[] = [];
      if (this.drops.mayHaveUnreported) {
        notices = await this.drops.takeNotices(rows, await this.space.room());
        // That measure was taken before these rows are written: they count against the next one.
        this.space.wrote(commitBytes(rows));
      }
      /** What the commit may have written to the WAL (see `trimWal`); unknown once the disk was full. */
      let walWritten = batchBytes(rows);
      try {
        await this.insertAll(rows, notices, undefined, committed);
      } catch (err) {
        if (!isFull(err)) throw err;
        walWritten = Number.POSITIVE_INFINITY;
        // The disk (or SQLite's page limit) is full: the WAL's space first, then the policy decides who goes.
        await this.space.checkpoint();
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
          const need = commitBytes(rows) + 16 * this.space.pageSize;
          if ((await this.dropOldest(need, 'disk-full').catch((e: unknown) => (isFull(e) ? 0 : Promise.reject(e)))) > 0) {
            await this.space.checkpoint();
            written = await attempt();
          }
        }
        // The notices' counts were taken off inside the transaction that failed: still in the file.
        if (!written) this.drops.dropped('disk-full', rows.length);
      }
      await this.drops.save().catch(() => undefined);
      await this.space.trimWal(walWritten);
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

  /** The queue's space on disk, measured. */
  private readonly space: Space;

  /** Bytes the WAL may hold before it is checkpointed: what `maxQueueBytes` keeps room for, beside the file. */
  get walBudget(): number {
    return this.space.walBudget;
  }
  /** What was dropped, counted and told. */
  private readonly drops: Drops;
  /** drop-newest dropped for lack of room: it keeps dropping until a quarter of the bound is free. */
  private full = false;

  /** Applies the overflow policy so that `rows` fit; returns the rows that will be written. */
  private async makeRoom(rows: RecordBatch): Promise<RecordBatch> {
    const incoming = commitBytes(rows);
    let room = this.full ? await this.space.room() : await this.space.roomFor(incoming);
    if (this.full && room >= Math.max(incoming, this.options.maxQueueBytes / 4)) this.full = false;
    if (!this.full && incoming <= room) {
      this.space.wrote(incoming);
      return rows;
    }
    const reason = (): DropReason => (this.space.diskBound ? 'disk-full' : 'queue-full');
    if (this.options.overflow === 'drop-oldest') {
      // Deleted rows free whole pages only once a page is empty, so measure again after each step;
      // every older record goes before any of the incoming ones.
      // A full disk: the WAL's frames go into the file first, and the WAL gives its space back.
      if (this.space.diskBound) {
        await this.space.checkpoint();
        room = await this.space.room();
      }
      // Up to what one commit can take on the disk: beyond it, deleting only frees pages in the
      // file, which the WAL cannot use, and would take every older record for nothing.
      // (Each measure of the room measures the cap again.)
      const wanted = () => Math.min(incoming, this.space.commitCap);
      while (wanted() > room) {
        const need = Math.max(wanted() - room, 4 * this.space.pageSize);
        // A DELETE needs WAL space too: on a full disk, checkpoint first and try once more.
        const freed = await this.dropOldest(need, reason()).catch(async (e: unknown) => {
          if (!isFull(e)) throw e;
          await this.space.checkpoint();
          return this.dropOldest(need, 'disk-full').catch((e2: unknown) => (isFull(e2) ? 0 : Promise.reject(e2)));
        });
        if (freed === 0) break;
        await this.space.checkpoint();
        room = await this.space.room();
      }
      if (incoming <= room) {
        this.space.wrote(incoming);
        return rows;
      }
      // More than the whole bound, or than the disk lets one commit take, in one burst: keep its
      // newest records.
      const costs = commitCosts(rows);
      let keep = rows.length;
      let bytes = 0;
      while (keep > 0 && bytes + costs[keep - 1]! <= room) bytes += costs[--keep]!;
      this.drops.dropped(reason(), keep);
      this.space.wrote(bytes);
      return rows.slice(keep);
    }
    // drop-newest: what fits of the oldest, then nothing until there is room again (no record
    // newer than a dropped one is kept while the queue stays full).
    const costs = commitCosts(rows);
    let keep = 0;
    let bytes = 0;
    if (!this.full) while (keep < rows.length && bytes + costs[keep]! <= room) bytes += costs[keep++]!;
    if (keep < rows.length) this.full = true;
    this.drops.dropped(reason(), rows.length - keep);
    this.space.wrote(bytes);
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
    for (const c of carried) this.drops.unreport(c.notice_reason, c.n);
    const count = await this.conn.run('DELETE FROM records WHERE id <= ? AND lease_until < ?', [lastId, now]);
    this.drops.dropped(reason, count);
    return count + carried.length;
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

  /** Ships the notices the file holds, when there is room for them: before a claim, so it takes them. */
  private async tellDrops(): Promise<void> {
    if (!this.drops.mayHaveUnreported) return;
    const notices = await this.drops.takeNotices(RecordBatch.empty, await this.space.room());
    if (notices.length > 0) await this.insertAll(RecordBatch.empty, notices).catch((err: unknown) => {
      if (!isFull(err)) throw err;
    });
  }

  private insert(rows: RecordBatch, now: number, destination: string | undefined, committed?: () => void): Promise<number> {
    const small = smallInsertStatement(rows, now, destination ?? null);
    if (small !== undefined) return this.conn.run(small[0], small[1], committed);
    const [sql, params] = insertStatement(rows, now, destination ?? null);
    return this.conn.runOnce(sql, params, committed);
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
          await this.space.checkpoint();
        }
      }
      // A claim rewrites its rows: their text (up to 3 bytes a UTF-16 unit) and their leases.
      let chars = 0;
      for (const r of rows) chars += r.body.length;
      await this.space.trimWal(3 * chars + rows.length * ROW_OVERHEAD);
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
      this.drops.dropped('max-age', n);
      if (n < 1000) break;
    }
    await this.drops.save();
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
        let rows = 0;
        for (const p of parts) rows += p.length;
        if (parts.length === 1) out = await this.deleteHeld(parts[0]!);
        else {
          const [where, params] = this.held(parts.flat());
          const gone = await this.conn.all<{ id: number }>(`DELETE FROM records WHERE ${where} RETURNING id`, params);
          out = new Set(gone.map((r) => r.id));
        }
        // A delete rewrites the pages its rows were on: a page a row, at most.
        await this.space.trimWal(rows * this.space.pageSize);
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
        this.drops.dropped('dead-letter-overflow', trimmed);
        await this.drops.save();
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
      await this.space.room(); // measures the usage
      return {
        pending: row?.n ?? 0,
        oldestPendingAt: row?.oldest ?? null,
        deadLetters: row?.dead ?? 0,
        queueBytes: this.space.usage,
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
