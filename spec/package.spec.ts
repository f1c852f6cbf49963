/** The built package (dist/, as published) loads from both require and import, with its types. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const root = join(__dirname, '..');
const run = (args: string[]) => spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 30_000 });
const names = ['LogLevel', 'VectorDeliveryError', 'VectorQueueError', 'VectorTransport', 'createVectorLogger'];

describe('package', () => {
  it('require("winston-vector") gives the public API', () => {
    const res = run(['-e', `const m = require('winston-vector'); console.log(JSON.stringify(Object.keys(m).sort()))`]);
    assert.equal(res.status, 0, res.stderr);
    const keys: string[] = JSON.parse(res.stdout);
    for (const n of names) assert.ok(keys.includes(n), n);
  });

  it('import ... from "winston-vector" gives the same API, named exports included', () => {
    const script = `import { VectorTransport, createVectorLogger, LogLevel } from 'winston-vector';
      import * as m from 'winston-vector';
      console.log(JSON.stringify({ t: typeof VectorTransport, c: typeof createVectorLogger, l: LogLevel.ERROR, keys: Object.keys(m).sort() }));`;
    const res = run(['--input-type=module', '-e', script]);
    assert.equal(res.status, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.deepEqual([out.t, out.c, out.l], ['function', 'function', 40]);
    for (const n of names) assert.ok(out.keys.includes(n), n);
  });

  it('exports types first, and the declaration files are there', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    assert.equal(Object.keys(pkg.exports['.'])[0], 'types');
    assert.ok(existsSync(join(root, pkg.exports['.'].types)));
    const dts = readFileSync(join(root, 'dist', 'index.d.ts'), 'utf8');
    for (const n of names) assert.match(dts, new RegExp(`\\b${n}\\b`));
  });

  it('a TypeScript consumer type-checks against the published types, in CommonJS and ESM', () => {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    for (const dir of ['cjs', 'esm']) {
      const res = run([tsc, '-p', join(root, 'spec', 'fixtures', `consumer-${dir}`, 'tsconfig.json')]);
      assert.equal(res.status, 0, `${dir}: ${res.stdout}${res.stderr}`);
    }
  });

  it('npm pack ships only what users need: dist/, docs/, README, CHANGELOG, LICENSE', () => {
    const res = spawnSync('npm', ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.equal(res.status, 0, res.stderr);
    const files: string[] = JSON.parse(res.stdout)[0].files.map((f: { path: string }) => f.path);
    for (const f of files) assert.match(f, /^(dist\/(?:(?:winston|queue|delivery|tools)\/)?[\w-]+\.(js|d\.ts)|docs\/[\w-]+\.md|package\.json|README\.md|CHANGELOG\.md|LICENSE)$/, f);
    for (const needed of ['dist/index.js', 'dist/index.d.ts', 'dist/tools/cli.js', 'docs/record-format.md', 'README.md', 'LICENSE']) assert.ok(files.includes(needed), needed);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    assert.equal(pkg.bin['winston-vector'], 'dist/tools/cli.js');
    assert.match(readFileSync(join(root, 'dist', 'tools', 'cli.js'), 'utf8'), /^#!\/usr\/bin\/env node\n/);
  });

  it('the published types resolve for CommonJS, ESM and bundlers (@arethetypeswrong/cli)', () => {
    const attw = join(root, 'node_modules', '@arethetypeswrong', 'cli', 'dist', 'index.js');
    const res = run([attw, '--pack', root, '--profile', 'node16', '--format', 'json']);
    assert.equal(res.status, 0, res.stdout + res.stderr);
    const report = JSON.parse(res.stdout);
    assert.deepEqual(Object.keys(report.problems), [], JSON.stringify(report.problems));
    assert.deepEqual(report.analysis.problems, [], JSON.stringify(report.analysis.problems));
  });
});
