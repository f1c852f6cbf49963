/** The queue's SQL: its tables, the shapes of its statements, and what SQLite's error codes mean. */
import type { RecordBatch } from '../delivery/batch';

/**
 * Rows per INSERT statement (its SQL grows ~20 bytes a row). A commit is one statement, so one trip
 * to SQLite's worker thread: each trip waits for the main thread to be free, and a busy logger would
 * otherwise hold every step of a multi-statement transaction back.
 */
export const ROWS_PER_INSERT = 32_000;

/**
 * Chunk parts per INSERT: one parameter each, and the `CASE` that picks a row's part has one branch
 * each (so it is bounded: records longer than a chunk have a chunk each). A burst of 16,384 records
 * fills five 1 MiB chunks at ~300 bytes a record, 64 at ~4 KB; beyond that a commit is several
 * statements in one transaction. Measured alone at ~1 KB a record, 32 parts a statement rather than
 * 8 (one statement a burst instead of two): 6.2-6.5 → 5.8-6.2 µs of CPU a row.
 */
export const PARTS_PER_INSERT = 64;

/** The `CASE` branches that pick a row's chunk part: part k is parameter ?(k + 1), from ?2 on. */
function partCases(parts: number): string {
  let cases = '';
  for (let p = 2; p < 2 + parts; p++) cases += ` WHEN ${p} THEN ?${p}`;
  return cases;
}

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
  const pick = partCases(params.length - 1);
  params.push(destination);
  const sql = `INSERT INTO records (body, created_at, destination) SELECT CAST(substr(CASE column1${pick} END, column2, column3) AS TEXT), ?1, ?${params.length} FROM (VALUES ${values.slice(0, -1)})`;
  return [sql, params];
}

/** Rows a commit may have for `smallInsertStatement`. */
export const SMALL_INSERT_ROWS = 256;
/** Chunk parts a commit may have for `smallInsertStatement` (a hand-over's rows start a chunk part). */
export const SMALL_INSERT_PARTS = 8;

/**
 * The SQL of `smallInsertStatement`: the same text for every commit, so it is prepared once and
 * kept. The rows come as one JSON parameter, `[[part, offset, length], ...]`, in their order.
 */
const SMALL_INSERT_SQL =
  `INSERT INTO records (body, created_at, destination) SELECT CAST(substr(CASE json_extract(j.value, '$[0]')${partCases(SMALL_INSERT_PARTS)} END, ` +
  `json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]')) AS TEXT), ?1, ?${2 + SMALL_INSERT_PARTS} ` +
  `FROM json_each(?${3 + SMALL_INSERT_PARTS}) AS j ORDER BY j.key`;

/**
 * One INSERT of a commit of a few rows (at most SMALL_INSERT_ROWS in SMALL_INSERT_PARTS chunk
 * parts), or undefined for a larger one (then `insertStatement`). The parts are bound as bytes as
 * there; each row's part, offset and length go in one JSON parameter instead of the SQL text, so
 * the statement's text never changes. A service logging a few records a turn commits many times a
 * second: with a new text each time, every commit was three trips to SQLite's thread (prepare, run,
 * finalize) and a parse; kept, it is one. The kept statement holds its last parameters until the
 * next commit: the bytes of at most SMALL_INSERT_ROWS records.
 */
export function smallInsertStatement(rows: RecordBatch, now: number, destination: string | null = null): [string, unknown[]] | undefined {
  if (rows.length > SMALL_INSERT_ROWS) return undefined;
  const params: unknown[] = [now];
  let json = '';
  let parts = 0;
  rows.forEachPart(
    (offset, length) => (json += `[${params.length + 1},${offset + 1},${length}],`),
    (bytes) => {
      parts++;
      params.push(bytes);
    },
  );
  if (parts > SMALL_INSERT_PARTS) return undefined;
  while (params.length < 1 + SMALL_INSERT_PARTS) params.push(null);
  params.push(destination, `[${json.slice(0, -1)}]`);
  return [SMALL_INSERT_SQL, params];
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

/** SQLite (or the disk) is full. */
export const isFull = (err: unknown): boolean => (err as { code?: unknown }).code === 'SQLITE_FULL';

/** Another connection holds the lock SQLite needed (SQLITE_BUSY). */
export const isBusy = (err: unknown): boolean => (err as { code?: unknown }).code === 'SQLITE_BUSY';

/** The file is damaged or not a database. */
export function isCorrupt(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || (err as { corrupt?: boolean }).corrupt === true;
}
