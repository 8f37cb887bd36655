import { describe, expect, it } from 'vitest';
import { Backoff, RepeatLimiter } from '../../src/worker/backoff.js';

describe('Backoff', () => {
  it('doubles up to the maximum and resets', () => {
    const backoff = new Backoff(100, 5_000);
    const delays = Array.from({ length: 8 }, () => backoff.next());
    expect(delays).toEqual([100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
    backoff.reset();
    expect(backoff.next()).toBe(100);
  });
});

describe('RepeatLimiter', () => {
  it('logs a key once per interval with the skipped count', () => {
    let now = 0;
    const limiter = new RepeatLimiter(60_000, () => now);
    expect(limiter.take('claim')).toBe(0);
    expect(limiter.take('claim')).toBeUndefined();
    expect(limiter.take('claim')).toBeUndefined();
    expect(limiter.take('other')).toBe(0);
    now = 60_000;
    expect(limiter.take('claim')).toBe(2);
    limiter.clear();
    expect(limiter.take('claim')).toBe(0);
  });
});
