/** README's demo command works: records arrive across an outage, nothing lost. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

describe('npm run demo (winston-vector demo)', () => {
  it('shows every record arriving, across an outage', () => {
    const root = join(__dirname, '..');
    const res = spawnSync(process.execPath, [join(root, 'dist', 'tools', 'cli.js'), 'demo'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /Done: 9 records received in \d+ requests, nothing lost\./);
    assert.equal((res.stdout.match(/vector <- /g) ?? []).length, 9);
    assert.match(res.stdout, /\[1\/3\][\s\S]*\[2\/3\][\s\S]*pending on disk: 6[\s\S]*\[3\/3\]/);
  });
});
