/**
 * `floor`: not a contender of the table, and not how VectorTransport works. A stripped-down durable
 * pipeline that measures how fast any design of this kind can deliver on the machine at hand, so a
 * target can be told apart from what the machine allows. Run it beside the others:
 * `BENCH_ONLY=http-batch1000,vector-batch1000,floor npm run bench`.
 *
 * It keeps what VectorTransport must pay for per record, and drops the rest:
 * - kept: the same record text (buildRecord), written to the same reused chunks and committed to
 *   SQLite in one INSERT per burst (the same statement, in WAL mode), `batchSize: 1000`, a JSON
 *   array body compressed with gzip level 1, sent by VectorTransport's own shipper (axios, one
 *   keep-alive connection), one request in flight (records arrive in order), the rows deleted
 *   after each 2xx;
 * - dropped: the claim. Rows are shipped from memory as soon as they are committed, so nothing is
 *   read back from SQLite. (A real design would insert them leased to this process; they are
 *   inserted with VectorTransport's own statement, without the few bytes a row of the lease.)
 *   Also dropped: retries, renewing leases, taking over leases of dead processes, overflow, dead
 *   letters, requests held while the logger commits a burst. It throws on anything but a 2xx. It is not
 *   crash-complete: never use it for anything but this measurement.
 */
import sqlite3 from 'sqlite3';
import TransportStream from 'winston-transport';
import { BatchWriter } from '../dist/delivery/batch.js';
import { LevelTable } from '../dist/winston/levels.js';
import { SCHEMA, insertStatement } from '../dist/queue/sql.js';
import { buildRecord, type RecordContext } from '../dist/winston/record.js';
import { HttpShipper } from '../dist/delivery/shipper.js';

const BATCH = 1000;

export class FloorTransport extends TransportStream {
  private readonly db: sqlite3.Database;
  private readonly ctx: RecordContext = {
    project: 'bench',
    table: 'logs',
    extraFields: {},
    idField: undefined,
    maxRecordBytes: 1024 * 1024,
    levels: new LevelTable(undefined, {}),
  };
  private readonly writer = new BatchWriter();
  private texts: string[] = [];
  private scheduled = false;
  /** SQLite work, one statement at a time, in order. */
  private tail: Promise<unknown>;
  private readonly outbox: Array<{ first: number; texts: string[] }> = [];
  private sending = false;
  /** The send loop running or last run. */
  private sent: Promise<void> = Promise.resolve();
  private readonly shipper: HttpShipper;

  constructor(url: string, dbPath: string) {
    super();
    // VectorTransport's own shipper, with its defaults: a JSON array, gzip, axios, keep-alive.
    this.shipper = new HttpShipper({ url, authorization: undefined, headers: {}, timeout: 10_000, body: 'json', compression: 'gzip' });
    this.db = new sqlite3.Database(dbPath);
    // VectorTransport's own tables, in the same journal mode and at its default synchronous level.
    this.tail = new Promise<void>((resolve, reject) =>
      this.db.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; ${SCHEMA}`, (err) => (err ? reject(err) : resolve())),
    );
  }

  override log(info: Record<string, unknown>, callback: () => void): void {
    const text = buildRecord(info, this.ctx, Date.now());
    this.texts.push(text);
    this.writer.write(text);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.commit());
    }
    callback();
  }

  /** Resolves once every record logged so far is committed. */
  committed(): Promise<void> {
    return new Promise((resolve) => setImmediate(() => resolve(this.tail.then(() => undefined))));
  }

  /** Resolves once everything committed so far is delivered and deleted. */
  override async close(): Promise<void> {
    await this.committed();
    // The last commit has called send(): its batches are in this loop.
    await this.sent;
    await this.tail;
    await new Promise<void>((resolve) => this.db.close(() => resolve()));
    this.shipper.close();
  }

  private run(sql: string, params: unknown[] = []): Promise<sqlite3.RunResult> {
    return new Promise((resolve, reject) =>
      this.db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve(this);
      }),
    );
  }

  private commit(): void {
    this.scheduled = false;
    const texts = this.texts;
    this.texts = [];
    const rows = this.writer.take();
    this.tail = this.tail.then(async () => {
      const result = await this.run(...insertStatement(rows, Date.now()));
      this.writer.recycle(rows);
      // One statement on one connection: the rows' ids are consecutive, in the order of logging.
      const first = result.lastID - texts.length + 1;
      for (let i = 0; i < texts.length; i += BATCH) this.outbox.push({ first: first + i, texts: texts.slice(i, i + BATCH) });
      this.send();
    });
  }

  /** Starts the send loop unless it runs: it takes batches pushed while it waits too. */
  private send(): void {
    if (this.sending) return;
    this.sending = true;
    this.sent = this.sendAll();
  }

  private async sendAll(): Promise<void> {
    while (this.outbox.length > 0) {
      const batch = this.outbox.shift()!;
      const result = await this.shipper.send(batch.texts);
      if (result.action !== 'delivered') throw new Error(`floor: ${result.detail}`);
      const last = batch.first + batch.texts.length - 1;
      this.tail = this.tail.then(() => this.run('DELETE FROM records WHERE id BETWEEN ? AND ?', [batch.first, last]));
    }
    this.sending = false;
  }
}
