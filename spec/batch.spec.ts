import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BatchWriter, CHUNK_BYTES, RecordBatch, SPARE_CHUNKS } from '../lib/delivery/batch';

/** Texts of every kind a record may hold: ASCII, two- and three-byte characters, surrogate pairs. */
const text = fc.string({ unit: fc.constantFrom('a', '"', 'é', 'ж', '€', '日', '😀', '\\n'), maxLength: 40 });

describe('RecordBatch / BatchWriter', () => {
  it('gives back the texts written, in order, with their UTF-8 sizes', () => {
    fc.assert(
      fc.property(fc.array(text, { maxLength: 60 }), (texts) => {
        const batch = RecordBatch.of(texts);
        assert.deepEqual(batch.texts(), texts);
        assert.equal(batch.length, texts.length);
        assert.deepEqual(batch.sizes(), texts.map((t) => Buffer.byteLength(t)));
        assert.equal(batch.byteLength, texts.reduce((n, t) => n + Buffer.byteLength(t), 0));
      }),
    );
  });

  it('slice and concat give the rows that Array slice and concat give, across chunk boundaries', () => {
    // Rows of 100,000 characters (each reserves 300 KB of a chunk): a few fill a chunk, so the rows
    // span several chunks and slices cut through segments.
    const big = (c: string, i: number) => `${c.repeat(100_000)}#${i}`;
    fc.assert(
      fc.property(
        fc.array(fc.oneof(text, fc.tuple(fc.constantFrom('x', 'é', '日'), fc.nat(99)).map(([c, i]) => big(c, i))), { maxLength: 12 }),
        fc.nat(14),
        fc.nat(14),
        (texts, a, b) => {
          const batch = RecordBatch.of(texts);
          const part = batch.slice(a, b);
          const expected = texts.slice(a, Math.max(a, b));
          assert.deepEqual(part.texts(), expected);
          assert.equal(part.length, expected.length);
          assert.equal(part.byteLength, expected.reduce((n, t) => n + Buffer.byteLength(t), 0));
          const joined = RecordBatch.concat([part, RecordBatch.of(['tail']), batch.slice(0, a)]);
          assert.deepEqual(joined.texts(), [...expected, 'tail', ...texts.slice(0, a)]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('split cuts the rows into consecutive batches within both bounds; forEachPart cuts them out of their chunks', () => {
    // Rows of 100,000 characters reserve 300 KB of a chunk, so a dozen rows span several chunks.
    const big = (c: string, i: number) => `${c.repeat(100_000)}#${i}`;
    fc.assert(
      fc.property(
        fc.array(fc.oneof(text, fc.tuple(fc.constantFrom('x', 'é'), fc.nat(99)).map(([c, i]) => big(c, i))), { maxLength: 24 }),
        fc.nat(4),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 3 }),
        (texts, from, maxRows, maxParts) => {
          const batch = RecordBatch.of(texts).slice(from);
          const expected = texts.slice(from);
          const pieces = batch.split(maxRows, maxParts);
          assert.deepEqual(pieces.flatMap((p) => p.texts()), expected);
          for (const p of pieces) {
            assert.ok(p.length >= 1 && p.length <= maxRows, `${p.length} rows, at most ${maxRows}`);
            assert.ok(p.chunks().length <= maxParts, `${p.chunks().length} chunks, at most ${maxParts}`);
          }
          const cut: string[] = [];
          let rows: Array<[number, number]> = [];
          batch.forEachPart(
            (offset, length) => rows.push([offset, length]),
            (bytes) => {
              for (const [offset, length] of rows) cut.push(bytes.toString('utf8', offset, offset + length));
              rows = [];
            },
          );
          assert.deepEqual(cut, expected);
        },
      ),
      { numRuns: 60 },
    );
    // 'é' rows take 200 KB and reserve 300 KB: four to a chunk, so the chunks hold 5, 5 and 1 rows.
    const e = (i: number) => big('é', i);
    const three = RecordBatch.of([e(1), e(2), 'a', e(3), e(4), e(5), e(6), e(7), e(8), 'b', e(9)]);
    assert.equal(three.chunks().length, 3);
    assert.deepEqual(three.split(100, 1).map((p) => p.length), [5, 5, 1], 'one chunk each');
    assert.deepEqual(three.split(4, 1).map((p) => p.length), [4, 1, 4, 1, 1]);
    assert.deepEqual(three.split(4, 2).map((p) => p.length), [4, 4, 3]);
  });

  it('takeFilled hands over the rows of the filled chunks only; the chunk being written goes on; together they are every row, in order', () => {
    const big = (c: string, i: number) => `${c.repeat(100_000)}#${i}`;
    fc.assert(
      fc.property(
        fc.array(fc.oneof(text, fc.tuple(fc.constantFrom('x', 'é', '日'), fc.nat(99)).map(([c, i]) => big(c, i))), { maxLength: 14 }),
        fc.array(fc.nat(13), { maxLength: 4 }),
        (texts, at) => {
          const writer = new BatchWriter();
          const taken: RecordBatch[] = [];
          texts.forEach((t, i) => {
            writer.write(t);
            if (at.includes(i)) {
              const filled = writer.filledRows;
              const batch = writer.takeFilled();
              assert.equal(batch.length, filled);
              assert.equal(writer.filledRows, 0);
              assert.equal(writer.length, i + 1 - taken.reduce((n, b) => n + b.length, 0) - filled, 'the rows left wait for the next take');
              taken.push(batch);
            }
          });
          const rest = writer.take();
          const all = RecordBatch.concat([...taken, rest]);
          assert.deepEqual(all.texts(), texts);
          assert.equal(all.byteLength, texts.reduce((n, t) => n + Buffer.byteLength(t), 0));
          for (const b of taken) assert.equal(b.byteLength, b.texts().reduce((n, t) => n + Buffer.byteLength(t), 0));
        },
      ),
    );
  });

  it('a record longer than a chunk gets a chunk of its own; the rows around it stay in order', () => {
    const writer = new BatchWriter();
    const long = '日'.repeat(CHUNK_BYTES); // 3 MiB of UTF-8
    writer.write('before');
    writer.write(long);
    writer.write('after');
    const batch = writer.take();
    assert.deepEqual(batch.texts(), ['before', long, 'after']);
    assert.equal(batch.chunks().length, 3);
    const own = batch.chunks()[1]!.length;
    assert.ok(own >= Buffer.byteLength(long) && own < Buffer.byteLength(long) + 64, `a chunk of ${own} bytes`);
  });

  it('recycled chunks are written again; a batch that is not recycled is never overwritten', () => {
    const writer = new BatchWriter();
    writer.write('first');
    const first = writer.take();
    writer.write('second');
    const second = writer.take();
    assert.notEqual(second.chunks()[0], first.chunks()[0], 'a taken batch keeps its chunk');
    writer.recycle(first);
    writer.write('third');
    const third = writer.take();
    assert.equal(third.chunks()[0], first.chunks()[0], 'the recycled chunk is reused');
    assert.deepEqual(second.texts(), ['second']);
    assert.deepEqual(third.texts(), ['third']);
    assert.equal(writer.take().length, 0);
  });

  it('only standard chunks are kept for reuse, and only a few', () => {
    const writer = new BatchWriter();
    const batches: RecordBatch[] = [];
    for (let i = 0; i < 20; i++) {
      writer.write(`row ${i}`);
      batches.push(writer.take());
    }
    writer.write('x'.repeat(CHUNK_BYTES + 1));
    const own = writer.take();
    for (const b of [own, ...batches]) writer.recycle(b);
    const reused = new Set<Buffer>();
    for (let i = 0; i < 20; i++) {
      writer.write(`again ${i}`);
      const chunk = writer.take().chunks()[0]!;
      assert.equal(chunk.length, CHUNK_BYTES);
      if (batches.some((b) => b.chunks()[0] === chunk)) reused.add(chunk);
    }
    assert.equal(reused.size, SPARE_CHUNKS);
  });
});
