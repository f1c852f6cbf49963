import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoffDelay, classifyStatus, parseRetryAfter } from '../lib/delivery/policy';

describe('policy', () => {
  const table: Array<[number, string]> = [
    [200, 'delivered'], [201, 'delivered'], [204, 'delivered'],
    [400, 'rejected'], [413, 'split'],
    [408, 'retry'], [429, 'retry'], [500, 'retry'], [502, 'retry'], [503, 'retry'], [504, 'retry'],
    [401, 'blocked'], [403, 'blocked'], [404, 'blocked'], [405, 'blocked'], [415, 'blocked'], [422, 'blocked'],
    [301, 'blocked'], [409, 'blocked'],
  ];
  for (const [status, action] of table) {
    it(`HTTP ${status} → ${action}`, () => assert.equal(classifyStatus(status), action));
  }

  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('7', now), 7000);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('soon', now), undefined);
    assert.equal(parseRetryAfter(undefined, now), undefined);
    assert.equal(parseRetryAfter('-3', now), undefined);
  });

  it('backoff is full jitter under an exponential ceiling, capped', () => {
    assert.equal(backoffDelay(0, 1000, 30_000, () => 1), 1000);
    assert.equal(backoffDelay(3, 1000, 30_000, () => 1), 8000);
    assert.equal(backoffDelay(10, 1000, 30_000, () => 1), 30_000);
    assert.equal(backoffDelay(1000, 1000, 30_000, () => 1), 30_000);
    assert.equal(backoffDelay(3, 1000, 30_000, () => 0), 0);
    assert.equal(backoffDelay(3, 1000, 30_000, () => 0.5), 4000);
  });
});
