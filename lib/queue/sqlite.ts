import type sqlite3 from 'sqlite3';

/**
 * [stop, SQLite work under way], shared with the main thread when this runs in the delivery worker
 * (lib/delivery/thread.ts). A process that exits ends the worker thread; node-sqlite3 aborts the
 * whole process (SIGABRT instead of the exit code) when the thread is torn down while it calls into
 * JavaScript: a statement's callback, or the addon's own loading. So at the exit the main thread
 * sets `stop` (no work starts any more) and waits, bounded, until none is under way.
 */
let control: Int32Array | undefined;

/** @internal Called once by the delivery worker with the shared flags. */
export function guardStatements(flags: Int32Array): void {
  control = flags;
}

/**
 * False when the process is exiting: the work must not start (its promise never settles). Counted
 * first and checked after, so a main thread that set `stop` and then read the count either sees
 * this work or is seen by it.
 */
function begin(): boolean {
  if (control === undefined) return true;
  Atomics.add(control, 1, 1);
  if (Atomics.load(control, 0) === 0) return true;
  Atomics.sub(control, 1, 1);
  Atomics.notify(control, 1);
  return false;
}

/** Work ended, but not yet counted off: node-sqlite3 is still in its own code after the callback. */
let ending = 0;

function countOff(): void {
  const n = ending;
  ending = 0;
  Atomics.sub(control!, 1, n);
  Atomics.notify(control!, 1);
}

/**
 * The work's callback ran. It is counted off in a later turn of the event loop, once node-sqlite3
 * has returned from the native code that called back (and would abort if the thread ended under it).
 */
function end(): void {
  if (control === undefined) return;
  if (ending++ === 0) setImmediate(countOff);
}

/**
 * node-sqlite3, loaded on the first open (inside `begin`/`end`): a thread torn down while the addon
 * loads aborts the process too.
 */
let addon: typeof sqlite3 | undefined;

function sqlite(): typeof sqlite3 {
  return (addon ??= require('sqlite3') as typeof sqlite3);
}

const never = <T>() => new Promise<T>(() => undefined);

/** Prepared statements a connection keeps (each SQL text one). */
const KEPT = 32;

interface Kept {
  readonly stmt: sqlite3.Statement;
  /** The calls under way, to reject if the statement fails to prepare. */
  readonly waiting: Set<(err: Error) => void>;
  failed: Error | undefined;
}

/**
 * A promise face for one sqlite3 connection. Every operation runs through `exclusive`, one at a
 * time, so a transaction (BEGIN … COMMIT) is never interleaved with another caller's statement
 * on the same connection.
 */
export class Connection {
  private tail: Promise<unknown> = Promise.resolve();
  /** Prepared statements kept for reuse, by their SQL, the most recently used last. */
  private readonly statements = new Map<string, Kept>();
  /** Finalizes not waited for (a statement pushed out, or used once), still under way: close waits for them. */
  private readonly finalizing = new Set<Promise<void>>();
  /** @internal A test seam: called with the SQL of every statement as it starts. */
  observer: ((sql: string) => void) | undefined = undefined;

  /** @internal A test seam: the SQL of the statements kept now, the least recently used first. */
  keptStatements(): string[] {
    return [...this.statements.keys()];
  }

  private constructor(private readonly db: sqlite3.Database) {}

  /**
   * Opens `file` (creating it unless `create` is false); a locked database is waited on for up to
   * `busyTimeout` ms before SQLITE_BUSY.
   */
  static open(file: string, busyTimeout: number, create = true): Promise<Connection> {
    if (!begin()) return never();
    let lib: typeof sqlite3;
    try {
      lib = sqlite();
    } catch (err) {
      end();
      return Promise.reject(err as Error);
    }
    return new Promise((resolve, reject) => {
      const mode = lib.OPEN_READWRITE | (create ? lib.OPEN_CREATE : 0);
      const db = new lib.Database(file, mode, (err) => {
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
   * The statement for `sql`, prepared once and kept (up to KEPT of them, the least recently used
   * finalized first): SQLite parses and plans a statement each time it is prepared, and most of the
   * queue's SQL has a fixed shape. node-sqlite3 runs the calls on one statement in order. With
   * `keep` false, a statement of its own for this one call, not kept (`runOnce`).
   */
  private statement(sql: string, keep: boolean): Kept {
    let kept = keep ? this.statements.get(sql) : undefined;
    if (kept !== undefined) {
      this.statements.delete(sql);
      this.statements.set(sql, kept);
      return kept;
    }
    const waiting = new Set<(err: Error) => void>();
    const created: Kept = {
      stmt: this.db.prepare(sql, (err: Error | null) => {
        if (!err) return;
        // node-sqlite3 never calls back the calls queued on a statement that failed to prepare.
        created.failed = err;
        if (this.statements.get(sql) === created) this.statements.delete(sql);
        for (const fail of waiting) fail(err);
        waiting.clear();
      }),
      waiting,
      failed: undefined,
    };
    if (!keep) return created;
    this.statements.set(sql, created);
    if (this.statements.size > KEPT) {
      const [oldest, old] = this.statements.entries().next().value as [string, Kept];
      this.statements.delete(oldest);
      this.finalizeLater(old);
    }
    return created;
  }

  /**
   * Finalizes a statement no longer kept, once the calls queued on it are done (node-sqlite3 queues
   * it behind them). One that never prepared holds nothing.
   */
  private finalize(kept: Kept): Promise<void> {
    if (kept.failed !== undefined) return Promise.resolve();
    if (!begin()) return never();
    return new Promise((resolve) =>
      kept.stmt.finalize(() => {
        end();
        resolve();
      }),
    );
  }

  /** Finalizes `kept` without waiting; `close()` waits for it (SQLite does not close with a statement left). */
  private finalizeLater(kept: Kept): void {
    const finalized = this.finalize(kept).finally(() => this.finalizing.delete(finalized));
    this.finalizing.add(finalized);
  }

  /**
   * Runs `call` on the statement for `sql` (kept, or with `keep` false finalized after the call);
   * `settle` gets node-sqlite3's callback. A statement that fails to prepare rejects its calls with
   * that error.
   */
  private onStatement<T>(sql: string, call: (stmt: sqlite3.Statement, cb: (err: Error | null, value: T) => void) => void, done?: () => void, keep = true): Promise<T> {
    if (!begin()) return never();
    this.observer?.(sql);
    const kept = this.statement(sql, keep);
    if (kept.failed !== undefined) {
      end();
      return Promise.reject(kept.failed);
    }
    return new Promise<T>((resolve, reject) => {
      const fail = (err: Error) => {
        end();
        reject(err);
      };
      kept.waiting.add(fail);
      call(kept.stmt, (err, value) => {
        kept.waiting.delete(fail);
        if (!err) done?.();
        // Used once: finalized now, so it holds no memory and pushes no kept statement out.
        if (!keep) this.finalizeLater(kept);
        end();
        if (err) reject(err);
        else resolve(value);
      });
    });
  }

  /**
   * `done`, when given, runs as soon as the statement has succeeded, inside node-sqlite3's callback
   * and before the statement counts as finished (see `control`): what it records is visible to a
   * main thread that waited for the statements in flight.
   */
  run(sql: string, params: unknown[] = [], done?: () => void): Promise<number> {
    return this.runStatement(sql, params, done, true);
  }

  /**
   * `run` for SQL whose text is new each time (a large commit's INSERT names each row's offsets): the
   * statement is finalized once it ran instead of kept. Kept, the one-off statements of a burst
   * (each as large as its thousands of rows) stayed in memory, and pushed out the statements of
   * fixed shape that are worth keeping.
   */
  runOnce(sql: string, params: unknown[] = [], done?: () => void): Promise<number> {
    return this.runStatement(sql, params, done, false);
  }

  private runStatement(sql: string, params: unknown[], done: (() => void) | undefined, keep: boolean): Promise<number> {
    return this.onStatement<number>(
      sql,
      (stmt, cb) =>
        stmt.run(params, function (this: sqlite3.RunResult, err: Error | null) {
          cb(err, err ? 0 : this.changes);
        }),
      done,
      keep,
    );
  }

  all<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return this.onStatement<T[]>(sql, (stmt, cb) => stmt.all(params, (err: Error | null, rows: T[]) => cb(err, rows)));
  }

  async get<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }

  exec(sql: string, done?: () => void): Promise<void> {
    if (!begin()) return never();
    this.observer?.(sql);
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
      // A statement still kept holds the connection open: finalize them first.
      const kept = [...this.statements.values()];
      this.statements.clear();
      await Promise.all([...kept.map((k) => this.finalize(k)), ...this.finalizing]);
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
