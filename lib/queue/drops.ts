/**
 * What the queue dropped, and telling it: every drop is counted by reason, kept in the file's
 * `counters` table (for `status`, across runs) and, until a notice record has told the downstream,
 * as `unreported:<reason>`; the notices are made here and inserted by the queue.
 */
import type { RecordBatch } from '../delivery/batch';
import { batchBytes, textBytes } from './space';
import type { Connection } from './sqlite';

/** Why records left the queue without being delivered. */
export type DropReason = 'queue-full' | 'disk-full' | 'max-age' | 'dead-letter-overflow' | 'damaged-file';

/** A record that tells the downstream how many records were dropped, and why. */
export interface Notice {
  readonly reason: DropReason;
  readonly count: number;
  readonly body: string;
}

export class Drops {
  constructor(
    private readonly conn: Connection,
    private readonly overflow: 'drop-oldest' | 'drop-newest',
    private readonly onDrop: ((reason: DropReason, count: number) => void) | undefined,
    private readonly notice: ((count: number, reason: DropReason) => string) | undefined,
  ) {}

  /**
   * Drops not yet told downstream, not yet added to the file's `unreported:<reason>` counters. The
   * file keeps what no notice has told yet, so any process that writes or claims next (also after
   * a restart) ships the notice; a notice's insert takes its count off in the same transaction.
   */
  private readonly unreported = new Map<DropReason, number>();
  /** The file may hold unreported drops: true at open and after a drop, false once none was found. */
  mayHaveUnreported = true;

  dropped(reason: DropReason, count: number): void {
    if (count <= 0) return;
    this.unreport(reason, count);
    this.counted.set(reason, (this.counted.get(reason) ?? 0) + count);
    this.onDrop?.(reason, count);
  }

  /** Drops not yet added to the `counters` table (it keeps them across runs, for `status`). */
  private readonly counted = new Map<string, number>();

  /** Adds the drops of the operation that just ran to the file's counters. Call inside `exclusive`. */
  async save(): Promise<void> {
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

  unreport(reason: DropReason, count: number): void {
    this.unreported.set(reason, (this.unreported.get(reason) ?? 0) + count);
    this.mayHaveUnreported = true;
  }

  /**
   * The notices for the drops the file holds as not yet reported (this process's and any other's),
   * one per reason, when they fit (under `drop-oldest` they always go in: they are what tells the
   * downstream about the gap). Their counts come off when they are inserted. Call inside `exclusive`.
   */
  async takeNotices(rows: RecordBatch, room: number): Promise<Notice[]> {
    if (!this.notice) return [];
    try {
      await this.save();
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
      return { reason, count: p.value, body: this.notice!(p.value, reason) };
    });
    const need = textBytes(notices.map((x) => x.body)) + batchBytes(rows);
    if (need > room && this.overflow === 'drop-newest') return [];
    return notices;
  }
}
