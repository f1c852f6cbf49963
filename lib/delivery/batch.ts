/**
 * Records waiting for a commit, as UTF-8 text packed in byte chunks outside the JS heap.
 *
 * Why: a record waits from `log()` until its commit ends (tens of ms in a burst). Kept as a string,
 * it outlives one or two scavenges and is copied, then promoted to the old generation; in a burst
 * that is every record, so the old generation grows and is collected again and again. Written to a
 * chunk as soon as it is built, the string dies young, and a waiting burst is a few chunks that are
 * reused commit after commit. SQLite gets each chunk once, with each row's offset and length
 * (`forEachPart`), so the insert makes no per-row object either.
 */

/** Bytes of one chunk. A record longer than this gets a chunk of its own. */
export const CHUNK_BYTES = 1024 * 1024;

/**
 * Chunks a writer keeps for reuse after a commit: the first SPARE_CHUNKS standard chunks it makes,
 * its pool (so at most SPARE_CHUNKS × CHUNK_BYTES stay allocated while idle). Others are let go.
 */
export const SPARE_CHUNKS = 8;

/** Bytes before each row in a chunk: its length, as a 32-bit little-endian integer. */
const PREFIX = 4;

/**
 * `rows` rows of one chunk, from byte `start` on. Each row is its length (PREFIX bytes) then its
 * text, so the rows of a burst cost no JS object of their own at all.
 */
export interface Segment {
  readonly chunk: Buffer;
  readonly start: number;
  readonly rows: number;
}

/** A batch as `postMessage` carries it: its chunks' shared memory and where its rows are. */
export interface SharedBatch {
  readonly segments: ReadonlyArray<{ readonly buffer: SharedArrayBuffer; readonly offset: number; readonly length: number; readonly start: number; readonly rows: number }>;
  readonly rows: number;
  readonly byteLength: number;
}

/** A chunk of `size` bytes in shared memory: the delivery worker reads it where it is. */
const sharedChunk = (size: number): Buffer => Buffer.from(new SharedArrayBuffer(size));

/** Rows of UTF-8 text, in order. Immutable: `slice` and `concat` share the chunks. */
export class RecordBatch {
  /** Made by `BatchWriter.take()` and `takeFilled()`, `of`, `concat` and `slice`. */
  constructor(
    private readonly segments: readonly Segment[],
    /** Rows. */
    readonly length: number,
    /** Bytes of all rows, in UTF-8. */
    readonly byteLength: number,
  ) {}

  static readonly empty = new RecordBatch([], 0, 0);

  /** A batch of these texts (in fresh chunks). */
  static of(texts: readonly string[]): RecordBatch {
    const writer = new BatchWriter();
    for (const text of texts) writer.write(text);
    return writer.take();
  }

  /** The rows of `batches`, in order. */
  static concat(batches: readonly RecordBatch[]): RecordBatch {
    if (batches.length === 1) return batches[0]!;
    let length = 0;
    let bytes = 0;
    const segments: Segment[] = [];
    for (const b of batches) {
      segments.push(...b.segments);
      length += b.length;
      bytes += b.byteLength;
    }
    return new RecordBatch(segments, length, bytes);
  }

  /** Calls `fn` with each row in order. A view is only valid during the call: the chunk is reused. */
  forEach(fn: (row: Buffer, index: number) => void): void {
    let i = 0;
    for (const { chunk, start, rows } of this.segments) {
      let at = start;
      for (let k = 0; k < rows; k++) {
        const end = at + PREFIX + chunk.readUInt32LE(at);
        fn(chunk.subarray(at + PREFIX, end), i++);
        at = end;
      }
    }
  }

  /**
   * Walks the rows without a view of each: for each chunk in order, `row(offset, length)` for each
   * of its rows (`offset` from the start of the chunk's part), then `part(bytes)` with a view of
   * that part. A view is only valid during the call: the chunk is reused.
   */
  forEachPart(row: (offset: number, length: number) => void, part: (bytes: Buffer) => void): void {
    for (const { chunk, start, rows } of this.segments) {
      let at = start;
      for (let k = 0; k < rows; k++) {
        const length = chunk.readUInt32LE(at);
        row(at + PREFIX - start, length);
        at += PREFIX + length;
      }
      part(chunk.subarray(start, at));
    }
  }

  /** The rows in consecutive batches of at most `maxRows` rows and `maxParts` chunk parts each. */
  split(maxRows: number, maxParts: number): RecordBatch[] {
    const cuts: number[] = [0];
    let first = 0; // index in the batch of the segment's first row
    let rows = 0; // rows in the batch being cut
    let parts = 0; // its parts
    for (const segment of this.segments) {
      if (parts === maxParts) {
        cuts.push(first);
        rows = 0;
        parts = 0;
      }
      parts++;
      let left = segment.rows;
      while (rows + left > maxRows) {
        const take = maxRows - rows;
        left -= take;
        cuts.push(first + segment.rows - left);
        rows = 0;
        parts = 1;
      }
      rows += left;
      first += segment.rows;
    }
    cuts.push(this.length);
    const out: RecordBatch[] = [];
    for (let i = 1; i < cuts.length; i++) if (cuts[i]! > cuts[i - 1]!) out.push(this.slice(cuts[i - 1]!, cuts[i]!));
    return out;
  }

  /** Each row's size in bytes. */
  sizes(): number[] {
    const out: number[] = [];
    this.forEach((row) => out.push(row.length));
    return out;
  }

  /** Rows `from` (inclusive) to `to` (exclusive), like Array.prototype.slice with non-negative bounds. */
  slice(from: number, to = this.length): RecordBatch {
    from = Math.max(0, Math.min(from, this.length));
    to = Math.max(from, Math.min(to, this.length));
    if (from === 0 && to === this.length) return this;
    const segments: Segment[] = [];
    let bytes = 0;
    let first = 0; // index in the batch of the segment's first row
    for (const { chunk, start, rows } of this.segments) {
      const lo = Math.max(from - first, 0);
      const hi = Math.min(to - first, rows);
      if (lo < hi) {
        let at = start;
        let cutStart = start;
        for (let k = 0; k < hi; k++) {
          if (k === lo) cutStart = at;
          const length = chunk.readUInt32LE(at);
          if (k >= lo) bytes += length;
          at += PREFIX + length;
        }
        segments.push({ chunk, start: cutStart, rows: hi - lo });
      }
      first += rows;
    }
    return new RecordBatch(segments, to - from, bytes);
  }

  /** The rows as strings (for queues that keep strings, and for tests). */
  texts(): string[] {
    const out: string[] = [];
    this.forEach((row) => out.push(row.toString('utf8')));
    return out;
  }

  /**
   * The batch as it crosses to another thread: chunks are SharedArrayBuffers, so nothing is
   * copied; the receiving thread sees the same bytes, and this thread must not reuse the chunks
   * (`recycle`) before the other is done with them.
   */
  toShared(): SharedBatch {
    return {
      segments: this.segments.map(({ chunk, start, rows }) => ({ buffer: chunk.buffer as SharedArrayBuffer, offset: chunk.byteOffset, length: chunk.length, start, rows })),
      rows: this.length,
      byteLength: this.byteLength,
    };
  }

  /** A batch over the chunks of `toShared` (on another thread). */
  static fromShared(b: SharedBatch): RecordBatch {
    if (b.rows === 0) return RecordBatch.empty;
    return new RecordBatch(
      b.segments.map((s) => ({ chunk: Buffer.from(s.buffer, s.offset, s.length), start: s.start, rows: s.rows })),
      b.rows,
      b.byteLength,
    );
  }

  /** The chunks this batch's rows are in (each once). */
  chunks(): Buffer[] {
    return [...new Set(this.segments.map((s) => s.chunk))];
  }

  /** Where the rows are: each chunk's rows from byte `start` on, in order. */
  get parts(): readonly Segment[] {
    return this.segments;
  }
}

/**
 * Writes records into chunks until `take()` hands them over as one batch. After the batch is
 * committed, `recycle()` gives its chunks back for the next ones.
 */
export class BatchWriter {
  private chunk: Buffer | undefined;
  private used = 0;
  /** Rows in the chunk being written, and their bytes. */
  private rows = 0;
  private chunkBytes = 0;
  /** Filled chunks' rows, not yet taken. */
  private segments: Segment[] = [];
  private bytes = 0;
  private readonly spare: Buffer[] = [];
  /** The chunks kept for reuse, for the writer's life (see SPARE_CHUNKS). */
  private readonly pool: Buffer[] = [];
  /** Rows written since the last `take()`. */
  length = 0;

  write(text: string): void {
    // A UTF-16 unit is at most 3 bytes in UTF-8: a row that may not fit starts a new chunk.
    const most = PREFIX + text.length * 3;
    if (this.chunk === undefined || this.chunk.length - this.used < most) this.open(most <= CHUNK_BYTES ? 0 : PREFIX + Buffer.byteLength(text));
    const chunk = this.chunk!;
    const length = chunk.write(text, this.used + PREFIX, 'utf8');
    chunk.writeUInt32LE(length, this.used);
    this.used += PREFIX + length;
    this.bytes += length;
    this.chunkBytes += length;
    this.rows++;
    this.length++;
  }

  /** What was written since the last `take()`, without taking it (for the exit spill). */
  peek(): RecordBatch {
    const segments = this.chunk !== undefined && this.rows > 0 ? [...this.segments, { chunk: this.chunk, start: 0, rows: this.rows }] : this.segments;
    return segments.length === 0 ? RecordBatch.empty : new RecordBatch(segments, this.length, this.bytes);
  }

  /** Hands over what was written as one batch; the next rows go to another chunk. */
  take(): RecordBatch {
    this.close();
    const batch = this.segments.length === 0 ? RecordBatch.empty : new RecordBatch(this.segments, this.length, this.bytes);
    this.segments = [];
    this.length = 0;
    this.bytes = 0;
    this.chunk = undefined;
    return batch;
  }

  /** Rows written since the last take in chunks already filled (not in the one being written). */
  get filledRows(): number {
    return this.length - this.rows;
  }

  /**
   * Hands over the rows of the filled chunks only, oldest first; the chunk being written goes on
   * with its rows (the newest), for the next take.
   */
  takeFilled(): RecordBatch {
    const rows = this.filledRows;
    if (rows === 0) return RecordBatch.empty;
    const batch = new RecordBatch(this.segments, rows, this.bytes - this.chunkBytes);
    this.segments = [];
    this.length -= rows;
    this.bytes = this.chunkBytes;
    return batch;
  }

  /** `batch` (taken from this writer) is committed or given up: its pooled chunks may be written again. */
  recycle(batch: RecordBatch): void {
    for (const chunk of batch.chunks()) {
      if (this.pool.includes(chunk) && !this.spare.includes(chunk)) this.spare.push(chunk);
    }
  }

  /** `chunk`'s place in this writer's pool (it is kept and reused for the writer's life), or -1. */
  poolIndex(chunk: Buffer): number {
    return this.pool.indexOf(chunk);
  }

  /** The chunk at `index` of the pool (see `poolIndex`). */
  pooled(index: number): Buffer {
    return this.pool[index]!;
  }

  /** Ends the current chunk's segment and starts a chunk of `size` bytes (0: a standard chunk). */
  private open(size: number): void {
    this.close();
    let chunk = size === 0 ? this.spare.pop() : undefined;
    if (chunk === undefined) {
      chunk = sharedChunk(size === 0 ? CHUNK_BYTES : size);
      if (size === 0 && this.pool.length < SPARE_CHUNKS) this.pool.push(chunk);
    }
    this.chunk = chunk;
    this.used = 0;
  }

  private close(): void {
    if (this.chunk !== undefined && this.rows > 0) this.segments.push({ chunk: this.chunk, start: 0, rows: this.rows });
    this.rows = 0;
    this.chunkBytes = 0;
  }
}
