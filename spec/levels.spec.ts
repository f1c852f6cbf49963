import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import winston from 'winston';
import { LevelTable, LogLevel } from '../lib/winston/levels';

const table = (levels: Record<string, number> | undefined, user: Record<string, number> = {}) => {
  const t = new LevelTable(levels, user);
  return Object.fromEntries(Object.keys(levels ?? winston.config.npm.levels).map((l) => [l, [t.get(l).name, t.get(l).num]]));
};

describe('levels', () => {
  it('npm set', () => {
    assert.deepEqual(table(winston.config.npm.levels), {
      error: ['ERROR', 40], warn: ['WARNING', 30], info: ['INFO', 20], http: ['HTTP', 15],
      verbose: ['VERBOSE', 13], debug: ['DEBUG', 10], silly: ['SILLY', 5],
    });
  });

  it('syslog set', () => {
    assert.deepEqual(table(winston.config.syslog.levels), {
      emerg: ['EMERG', 60], alert: ['ALERT', 55], crit: ['CRITICAL', 50], error: ['ERROR', 40],
      warning: ['WARNING', 30], notice: ['NOTICE', 25], info: ['INFO', 20], debug: ['DEBUG', 10],
    });
  });

  it('cli set', () => {
    assert.deepEqual(table(winston.config.cli.levels), {
      error: ['ERROR', 40], warn: ['WARNING', 30], help: ['HELP', 25], data: ['DATA', 22], info: ['INFO', 20],
      debug: ['DEBUG', 10], prompt: ['PROMPT', 9], verbose: ['VERBOSE', 8], input: ['INPUT', 7], silly: ['SILLY', 5],
    });
  });

  it('no logger yet: the npm set', () => {
    assert.deepEqual(new LevelTable(undefined, {}).get('verbose'), { name: 'VERBOSE', num: 13 });
  });

  it('a user map wins, also over a built-in set', () => {
    assert.deepEqual(new LevelTable(winston.config.npm.levels, { http: 18 }).get('http'), { name: 'HTTP', num: 18 });
  });

  it('a custom set: user map, then Python names, then a stable number from the position', () => {
    const levels = { fatal: 0, error: 1, warn: 2, notice: 3, info: 4, trace: 5, spam: 6 };
    assert.deepEqual(table(levels, { trace: 5 }), {
      fatal: ['CRITICAL', 50], error: ['ERROR', 40], warn: ['WARNING', 30], notice: ['NOTICE', 25],
      info: ['INFO', 20], trace: ['TRACE', 5], spam: ['SPAM', 4],
    });
    assert.deepEqual(table(levels, { trace: 5 }), table(levels, { trace: 5 }), 'the same every time');
    // More severe than anything numbered: 5 a step above it.
    assert.deepEqual(table({ panic: 0, error: 1 }), { panic: ['PANIC', 45], error: ['ERROR', 40] });
    // Nothing numbered at all: 10 a step, least severe is 10.
    assert.deepEqual(table({ loud: 0, quiet: 1 }), { loud: ['LOUD', 20], quiet: ['QUIET', 10] });
  });

  it('a level outside the set never throws', () => {
    const t = new LevelTable(winston.config.npm.levels, {});
    assert.deepEqual(t.get('weird'), { name: 'WEIRD', num: 0 });
    assert.deepEqual(t.get(undefined), { name: 'UNDEFINED', num: 0 });
  });

  it('LogLevel is Python\'s', () => {
    assert.deepEqual({ ...LogLevel }, { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 });
  });
});
