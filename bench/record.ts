/**
 * `npx tsx bench/record.ts`: what building one hostile record costs, truncation included. Each case
 * is built BENCH_RUNS times (default 5); the median and the worst are printed, in ms, with the
 * record's size. The target: each case well under 100 ms (a record is built on the caller's thread).
 * Beside it, the same for one plain `JSON.stringify` of the info: the floor any way of writing the
 * record pays at least once, measured in the same run, so the ratio holds on a noisy machine.
 */
import { LevelTable } from '../lib/winston/levels';
import { buildRecord, type RecordContext } from '../lib/winston/record';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);

const ctx: RecordContext = {
  project: 'p',
  table: 't',
  extraFields: {},
  idField: undefined,
  maxRecordBytes: 1024 * 1024,
  levels: new LevelTable(undefined, {}),
};

function wide(keys: number, valueChars: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < keys; i++) out[`k${i}`] = 'v'.repeat(valueChars);
  return out;
}

function deep(levels: number): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  let at = root;
  for (let i = 0; i < levels; i++) at = (at.a = {}) as Record<string, unknown>;
  return root;
}

const cases: Array<[string, () => Record<string, unknown>]> = [
  ['1.5 MiB over 8,000 keys (top level)', () => ({ level: 'info', message: 'm', ...wide(8000, 190) })],
  ['1.5 MiB over 8,000 keys (one nested object)', () => ({ level: 'info', message: 'm', meta: wide(8000, 190) })],
  ['100k keys (top level)', () => ({ level: 'info', message: 'm', ...wide(100_000, 8) })],
  ['100k keys (one nested object)', () => ({ level: 'info', message: 'm', payload: wide(100_000, 8) })],
  ['10k-deep nesting', () => ({ level: 'info', message: 'm', root: deep(10_000) })],
  ['a 3 MiB emoji message', () => ({ level: 'info', message: '😀'.repeat(800_000) })],
  ['lone surrogates in 50k values', () => ({ level: 'info', message: 'm', ...wide(50_000, 4), x: 'a\ud800' })],
];

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

console.log(`| case | median ms | worst ms | JSON.stringify alone, median ms | ratio | record bytes |\n|---|---|---|---|---|---|`);
for (const [name, make] of cases) {
  const info = make();
  const times: number[] = [];
  const floor: number[] = [];
  let bytes = 0;
  for (let i = 0; i < RUNS; i++) {
    let start = process.hrtime.bigint();
    const text = buildRecord(info, ctx);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
    bytes = Buffer.byteLength(text);
    start = process.hrtime.bigint();
    try {
      JSON.stringify(info);
      floor.push(Number(process.hrtime.bigint() - start) / 1e6);
    } catch {
      // 10k-deep nesting is too deep for JSON.stringify itself (the record stops at depth 10)
    }
  }
  const m = median(times);
  const f = floor.length === 0 ? undefined : median(floor);
  const vs = f === undefined ? '— | —' : `${f.toFixed(1)} | ${(m / Math.max(f, 0.05)).toFixed(1)}×`;
  console.log(`| ${name} | ${m.toFixed(1)} | ${Math.max(...times).toFixed(1)} | ${vs} | ${bytes} |`);
}
