import sqlite3 from 'sqlite3';

/**
 * [stop, statements in flight], shared with the main thread when this runs in the delivery worker
 * (lib/delivery.ts). A process that exits ends the worker thread; a statement that completes while
 * the thread is torn down makes node-sqlite3 abort the whole process. So at the exit the main
 * thread sets `stop` (no statement starts any more) and waits, bounded, for those in flight.
 */
let control: Int32Array | undefined;

/** @internal Called once by the delivery worker with the shared flags. */
export function guardStatements(flags: Int32Array): void {
  control = flags;
}

/** False when the process is exiting: the statement must not start (its promise never settles). */
function begin(): boolean {
  if (control === undefined) return true;
  if (Atomics.load(control, 0) !== 0) return false;
  Atomics.add(control, 1, 1);
  return true;
}

function end(): void {
  if (control === undefined) return;
  Atomics.sub(control, 1, 1);
  Atomics.notify(control, 1);
}

const never = <T>() => new Promise<T>(() => undefined);

/**
 * A promise face for one sqlite3 connection. Every operation runs through `exclusive`, one at a
 * time, so a transaction (BEGIN … COMMIT) is never interleaved with another caller's statement
 * on the same connection.
 */
export class Connection {
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(private readonly db: sqlite3.Database) {}

  /**
   * Opens `file` (creating it unless `create` is false); a locked database is waited on for up to
   * `busyTimeout` ms before SQLITE_BUSY.
   */
  static open(file: string, busyTimeout: number, create = true): Promise<Connection> {
    if (!begin()) return never();
    return new Promise((resolve, reject) => {
      const mode = sqlite3.OPEN_READWRITE | (create ? sqlite3.OPEN_CREATE : 0);
      const db = new sqlite3.Database(file, mode, (err) => {
        end();
        if (err) {
          reject(err);
          return;
        }
        db.configure('busyTimeout', busyTimeout);
        resolve(new Connection(db));
      });
    });
  }

  /** Runs `fn` after every earlier exclusive operation has settled. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /**
   * `done`, when given, runs as soon as the statement has succeeded, inside node-sqlite3's callback
   * and before the statement counts as finished (see `control`): what it records is visible to a
   * main thread that waited for the statements in flight.
   */
  run(sql: string, params: unknown[] = [], done?: () => void): Promise<number> {
    if (!begin()) return never();
    return new Promise((resolve, reject) => {
      this.db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (!err) done?.();
        end();
        if (err) reject(err);
        else resolve(this.changes);
      });
    });
  }

  all<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    if (!begin()) return never();
    return new Promise((resolve, reject) => {
      this.db.all(sql, params, (err: Error | null, rows: T[]) => {
        end();
        if (err) reject(err);
        else resolve(rows);
      });
    });
  }

  async get<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }

  exec(sql: string, done?: () => void): Promise<void> {
    if (!begin()) return never();
    return new Promise((resolve, reject) =>
      this.db.exec(sql, (err) => {
        if (!err) done?.();
        end();
        if (err) reject(err);
        else resolve();
      }),
    );
  }

  /** BEGIN IMMEDIATE … COMMIT around `fn`, rolled back if it throws; `committed` as `run`'s `done`. Call inside `exclusive`. */
  async transaction<T>(fn: () => Promise<T>, committed?: () => void): Promise<T> {
    await this.exec('BEGIN IMMEDIATE');
    try {
      const out = await fn();
      await this.exec('COMMIT', committed);
      return out;
    } catch (err) {
      await this.exec('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  close(): Promise<void> {
    return this.exclusive(async () => {
      if (!begin()) return never<void>();
      await new Promise<void>((resolve, reject) =>
        this.db.close((err) => {
          end();
          if (err) reject(err);
          else resolve();
        }),
      );
    });
  }
}
