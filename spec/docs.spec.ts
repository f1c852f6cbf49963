/**
 * The documentation tells the truth where a test can tell: every Vector config in README and
 * docs/vector.md is one the stand-in receiver (Vector's http_server as read from its code) accepts
 * both body formats with, its components are wired, its sinks have what they need; every relative
 * link points at a file of the repository, and nothing points outside it.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseToml } from 'smol-toml';
import winston from 'winston';
import { DEFAULTS } from '../lib/winston/options';
import { TRANSPORT_OPTION_KEYS } from '../lib/winston/option-names';
import type { Decoding } from '../lib/tools/receiver';
import { receiver, transport } from './support/helpers';

const root = join(__dirname, '..');
const read = (file: string) => readFileSync(join(root, file), 'utf8');
const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), 'bench/README.md', 'CHANGELOG.md'];

function tomlBlocks(file: string): Array<Record<string, any>> {
  return [...read(file).matchAll(/```toml\n([\s\S]*?)```/g)].map((m) => parseToml(m[1]!) as Record<string, any>);
}

/** What Vector's http_server source does with a body, for its config (as lib/tools/receiver.ts models it). */
function decodingOf(source: Record<string, any>): Decoding {
  assert.equal(source.encoding, undefined, 'no legacy `encoding` option');
  if (source.decoding?.codec !== 'json') return 'bytes';
  return source.framing?.method === 'bytes' ? 'json-bytes' : 'json';
}

/** Settings each sink and source type used in the docs cannot do without. */
const REQUIRED: Record<string, string[]> = {
  http_server: ['address'],
  vector: ['address'],
  console: ['encoding'],
  file: ['path', 'encoding'],
  clickhouse: ['endpoint', 'table'],
  kafka: ['bootstrap_servers', 'topic', 'encoding'],
};

describe('documentation', () => {
  const configs = [...tomlBlocks('README.md').map((c) => ['README.md', c] as const), ...tomlBlocks('docs/vector.md').map((c) => ['docs/vector.md', c] as const)];

  it('has Vector configs to check (README and docs/vector.md)', () => {
    assert.ok(tomlBlocks('README.md').length >= 1);
    assert.ok(tomlBlocks('docs/vector.md').length >= 5);
  });

  it('every Vector config is wired: inputs name its components, each has its required settings', () => {
    for (const [file, config] of configs) {
      const names = new Set([...Object.keys(config.sources ?? {}), ...Object.keys(config.transforms ?? {})]);
      assert.ok(Object.keys(config.sources ?? {}).length > 0, `${file}: a source`);
      assert.ok(Object.keys(config.sinks ?? {}).length > 0, `${file}: a sink`);
      for (const kind of ['sources', 'transforms', 'sinks'] as const) {
        for (const [name, c] of Object.entries<Record<string, any>>(config[kind] ?? {})) {
          for (const key of REQUIRED[c.type] ?? []) assert.ok(c[key] !== undefined, `${file}: ${kind}.${name} (${c.type}) needs ${key}`);
          if (kind === 'sources') continue;
          assert.ok(Array.isArray(c.inputs) && c.inputs.length > 0, `${file}: ${kind}.${name} has inputs`);
          for (const input of c.inputs) assert.ok(names.has(input), `${file}: ${kind}.${name} reads ${input}, which exists`);
        }
      }
      for (const [name, sink] of Object.entries<Record<string, any>>(config.sinks)) {
        // A disk buffer below Vector's minimum is refused at startup.
        if (sink.buffer?.type === 'disk') assert.ok(sink.buffer.max_size >= 268435488, `${file}: sinks.${name} buffer`);
      }
    }
  });

  it('every http_server source in them takes both body formats from the transport', async () => {
    let checked = 0;
    for (const [file, config] of configs) {
      for (const [name, source] of Object.entries<Record<string, any>>(config.sources)) {
        if (source.type !== 'http_server') continue;
        const decoding = decodingOf(source);
        for (const body of ['json', 'ndjson'] as const) {
          const r = await receiver({ decoding, path: source.path ?? '/' });
          const t = transport(r.url, { body });
          const logger = winston.createLogger({ transports: [t] });
          logger.info('a', { n: 1 });
          logger.info('b');
          await t.flush();
          assert.deepEqual(r.events.map((e) => e.message), ['a', 'b'], `${file}: sources.${name}, ${body}`);
          await t.close();
          await r.stop();
        }
        checked++;
      }
    }
    assert.ok(checked >= 4, `${checked} sources`);
  });

  it('relative links point at files of the repository; nothing points outside it', () => {
    for (const file of docs) {
      const text = read(file);
      assert.doesNotMatch(text, /shared\/docs|\.\.\/shared/, `${file} points outside the repository`);
      for (const m of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        const path = resolve(dirname(join(root, file)), target);
        assert.ok(path.startsWith(root), `${file}: ${target} is outside the repository`);
        assert.ok(existsSync(path), `${file}: ${target} exists`);
      }
    }
  });

  it('README stays a front door: at most ~300 lines, install, quick start and guarantees on its first screens', () => {
    const readme = read('README.md');
    const lines = readme.split('\n');
    assert.ok(lines.length <= 320, `${lines.length} lines`);
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    for (const [what, re] of [['install', /^## Install/], ['quick start', /^## Quick start/], ['guarantees', /^## Guarantees/]] as const) {
      const line = at(re);
      assert.ok(line >= 0 && line < 120, `${what} at line ${line + 1}`);
    }
    assert.match(readme, /npm install winston-vector winston/);
    assert.match(readme, /npx winston-vector receive/);
  });

  it('README\'s options table names every option, with the defaults the code has', () => {
    const rows = new Map<string, string>();
    for (const line of read('README.md').split('\n')) {
      const m = /^\| ((?:`\w+`(?:, )?)+) \| ([^|]+) \|/.exec(line);
      if (m) for (const name of m[1]!.matchAll(/`(\w+)`/g)) rows.set(name[1]!, m[2]!.trim());
    }
    // winston-transport's own options are named in the `level` row's text.
    const winstons = new Set(['format', 'silent', 'handleExceptions', 'handleRejections']);
    for (const key of TRANSPORT_OPTION_KEYS.filter((k) => !winstons.has(k))) {
      assert.ok(rows.has(key), `README's options table has \`${key}\``);
    }
    for (const [key, value] of Object.entries(DEFAULTS)) {
      const cell = rows.get(key);
      const shown = typeof value === 'string' ? [`\`'${value}'\``, `\`${value}\``] : [`\`${value}\``];
      assert.ok(cell !== undefined && shown.some((s) => cell.startsWith(s)), `${key}: README says ${cell}, the code ${JSON.stringify(value)}`);
    }
  });
});
