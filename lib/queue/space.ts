/**
 * The queue's space on disk: how much may still be written under `maxQueueBytes` and on the disk
 * (the pages in use, the WAL and its shared memory all count), measured from SQLite and the file
 * system, and the WAL kept small. What to drop when there is no room is the queue's policy
 * (lib/queue/queue.ts); this only measures and gives space back.
 */
import { statfsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { RecordBatch } from '../delivery/batch';
import type { Connection } from './sqlite';

/** Estimated bytes a row costs beyond its body (rowid, columns, b-tree cell). */
export const ROW_OVERHEAD = 48;
export const textBytes = (bodies: readonly string[]) => bodies.reduce((n, b) => n + Buffer.byteLength(b) + ROW_OVERHEAD, 0);
export const batchBytes = (rows: RecordBatch) => rows.byteLength + rows.length * ROW_OVERHEAD;
/** What a commit of `rows` counts against the room (see `Space.room`): its bytes twice, in the WAL and then in the file. */
export const commitBytes = (rows: RecordBatch) => 2 * batchBytes(rows);
/** What each row of `rows` counts against the room in a commit (as `commitBytes` counts them all), in order. */
export const commitCosts = (rows: RecordBatch) => rows.sizes().map((n) => 2 * (n + ROW_OVERHEAD));

/** The WAL's budget: a sixteenth of maxQueueBytes (or of the disk), within these bounds. */
const WAL_BUDGET_MIN = 8 * 1024;
const WAL_BUDGET_MAX = 4 * 1024 * 1024;
/** What the WAL's shared-memory index takes on disk (it grows by as much per ~4000 WAL frames). */
const SHM_BYTES = 32 * 1024;
/** The WAL budget from which `trimWal` skips measuring after small transactions. */
const SMALL_WRITE_BUDGET = 1024 * 1024;
/** Pages a transaction may write besides its rows' own (b-tree interior pages, the sequence, counters). */
const WAL_SLACK_PAGES = 16;
/** Bytes of pages (in the WAL, then in the file) a byte of rows takes at most: pages are not full, WAL frames have headers. */
const PAGES_PER_ROW_BYTE = 1.25;
/** Disk kept free beyond the WAL's allowance: for a checkpoint, the counters, a notice. */
const DISK_RESERVE = 64 * 1024;

export function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

export class Space {
  /** SQLite's page size for the file, read at open. */
  pageSize = 4096;

  constructor(
    private readonly conn: Connection,
    private readonly file: string,
    private readonly maxQueueBytes: number,
    private readonly now: () => number,
  ) {
    // A sixteenth of what the queue can take: maxQueueBytes, or the disk when that is smaller.
    let disk = Number.POSITIVE_INFINITY;
    try {
      const fs = statfsSync(dirname(file));
      disk = fs.bavail * fs.bsize + sizeOf(file) + sizeOf(`${file}-wal`);
    } catch {
      // no statfs: maxQueueBytes alone
    }
    this.walBudget = Math.min(WAL_BUDGET_MAX, Math.max(WAL_BUDGET_MIN, Math.floor(Math.min(maxQueueBytes, disk) / 16)));
  }

  /**
   * Bytes that may still be written (counted as a commit counts them: twice its rows, see
   * `makeRoom`). Under `maxQueueBytes`: the pages in use, the shared-memory file, and what the WAL
   * may hold after a commit (it is truncated back to twice its budget) count.
   *
   * On the disk, what is free once the WAL is checkpointed into the file and truncated: the free
   * space, plus the WAL, less the pages the file must still grow by to take the WAL in (a
   * checkpoint that cannot grow the file fails, and then nothing can be written or deleted again).
   * A commit writes its rows twice: to the WAL, which needs free disk (the file's free pages are
   * no use to it), and at the checkpoint to the file, which reuses its free pages first. So a
   * commit fits when its WAL frames and the file's growth fit in the free disk less a reserve
   * (for a delete, the counters, a notice), and the growth leaves the WAL's allowance free after it.
   */
  async room(): Promise<number> {
    const row = await this.conn.get<{ pages: number; free: number }>(
      'SELECT (SELECT page_count FROM pragma_page_count()) AS pages, (SELECT freelist_count FROM pragma_freelist_count()) AS free',
    );
    const pageCount = row?.pages ?? 0;
    const freePages = (row?.free ?? 0) * this.pageSize;
    const pages = pageCount * this.pageSize - freePages;
    const wal = sizeOf(`${this.file}-wal`);
    const shm = sizeOf(`${this.file}-shm`);
    this.usage = pages + wal + shm;
    const residual = 2 * this.walBudget;
    const byBound = this.maxQueueBytes - pages - Math.max(shm, SHM_BYTES) - residual;
    let byDisk = Number.POSITIVE_INFINITY;
    this.commitCap = Number.POSITIVE_INFINITY;
    try {
      const fs = statfsSync(dirname(this.file));
      const growth = Math.max(0, pageCount * this.pageSize - sizeOf(this.file));
      const free = fs.bavail * fs.bsize + wal - growth - DISK_RESERVE;
      // The rows' WAL frames alone: dropping old records (free pages) does not make this larger.
      // Then their pages, where free pages do not take them; and the WAL's allowance after that.
      // In bytes of rows: their pages are not full, and each WAL frame has a header.
      this.commitCap = (2 * free) / PAGES_PER_ROW_BYTE;
      byDisk = Math.min(2 * free, free + freePages, 2 * (free - residual + freePages)) / PAGES_PER_ROW_BYTE;
    } catch {
      // no statfs here: SQLITE_FULL is still handled
    }
    this.diskBound = byDisk < byBound;
    const room = Math.min(byBound, byDisk);
    this.measured = { at: this.now(), room, since: 0 };
    return room;
  }

  /**
   * The most one commit can take on the disk at the last measure (counted as `room` counts): its
   * WAL frames need free disk, which deleting records does not give.
   */
  commitCap = Number.POSITIVE_INFINITY;

  /** Bytes the queue takes on disk at the last measure: pages in use, WAL and shm. */
  usage = 0;
  /** The last measure's room was set by the disk, not by `maxQueueBytes`. */
  diskBound = false;
  /** Bytes the WAL may hold before it is checkpointed (and truncated back to). */
  readonly walBudget: number;
  /** The last measure of the room, and the bytes written since: asking on every commit costs. */
  private measured = { at: 0, room: 0, since: 0 };

  /**
   * `room()` when the queue may be near its bound (or the last measure is over a second old, since
   * other processes may share the file and the disk); otherwise the last room less what was
   * written since, which is enough to know that `incoming` fits.
   */
  async roomFor(incoming: number): Promise<number> {
    const m = this.measured;
    const left = m.room - m.since;
    if (this.now() - m.at < 1000 && left - incoming > m.room * 0.25) return left;
    return this.room();
  }

  /**
   * A large transaction (a commit, a claim, a delete) leaves a large WAL behind: its space is given
   * back now, not at the next checkpoint. Call inside `exclusive`, with what the transaction's rows
   * may have written to the WAL (bytes, at most; WAL_SLACK_PAGES are added for the rest): with a
   * WAL budget of a MiB or more, one that wrote less than an eighth of it is not measured. SQLite's automatic checkpoint and
   * `journal_size_limit` keep the WAL near its budget after small transactions (it grows past that
   * by one transaction), and a stat() after each one cost about 5% of the worker's CPU at a steady
   * 2,000 records a second.
   */
  async trimWal(written = Number.POSITIVE_INFINITY): Promise<void> {
    if (this.walBudget >= SMALL_WRITE_BUDGET && written + WAL_SLACK_PAGES * this.pageSize < this.walBudget / 8) return;
    if (sizeOf(`${this.file}-wal`) > 2 * this.walBudget) await this.checkpoint();
  }

  /** Moves the WAL into the file and truncates it, giving its space back (after deletes, on a full disk). */
  async checkpoint(): Promise<void> {
    await this.conn.exec('PRAGMA wal_checkpoint(TRUNCATE)').catch(() => undefined);
  }

  /** `bytes` were written since the last measure (roomFor counts them off). */
  wrote(bytes: number): void {
    this.measured.since += bytes;
  }
}
