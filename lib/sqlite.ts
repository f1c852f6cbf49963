import sqlite3 from 'sqlite3';

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
    return new Promise((resolve, reject) => {
      const mode = sqlite3.OPEN_READWRITE | (create ? sqlite3.OPEN_CREATE : 0);
      const db = new sqlite3.Database(file, mode, (err) => {
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

  run(sql: string, params: unknown[] = []): Promise<number> {
    return new Promise((resolve, reject) => {
      this.db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve(this.changes);
      });
    });
  }

  all<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return new Promise((resolve, reject) => {
      this.db.all(sql, params, (err: Error | null, rows: T[]) => (err ? reject(err) : resolve(rows)));
    });
  }

  async get<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  /** BEGIN IMMEDIATE … COMMIT around `fn`, rolled back if it throws. Call inside `exclusive`. */
  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    await this.exec('BEGIN IMMEDIATE');
    try {
      const out = await fn();
      await this.exec('COMMIT');
      return out;
    } catch (err) {
      await this.exec('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  close(): Promise<void> {
    return this.exclusive(async () => {
      await new Promise<void>((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
    });
  }
}
