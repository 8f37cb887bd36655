/** The primary's rate-limit windows for an API cluster: blocks, limits and window ends. */
import { describe, expect, it } from 'vitest';
import { QuotaWindows } from '../../src/api/shared-rate-limit.js';

describe('rate-limit windows of a cluster', () => {
  it('never hands out more than the limit', () => {
    const windows = new QuotaWindows(2);
    const blocks: number[] = [];
    for (let i = 0; i < 40; i++) blocks.push(windows.grant('token:a', 60_000, 100, 1_000).granted);
    expect(blocks.reduce((sum, block) => sum + block, 0)).toBe(100);
    // A quarter of the rest split between two processes, down to one request at a time.
    expect(blocks.slice(0, 3)).toEqual([13, 11, 10]);
    expect(blocks.filter((block) => block > 0).at(-1)).toBe(1);
    expect(blocks.at(-1)).toBe(0);
  });

  it('keeps each key apart', () => {
    const windows = new QuotaWindows(1);
    expect(windows.grant('token:a', 60_000, 4, 0)).toEqual({
      granted: 1,
      allocated: 1,
      ttl: 60_000,
    });
    expect(windows.grant('token:b', 60_000, 4, 10)).toEqual({
      granted: 1,
      allocated: 1,
      ttl: 60_000,
    });
  });

  it('starts a new window after the last ends', () => {
    const windows = new QuotaWindows(1);
    for (let i = 0; i < 10; i++) windows.grant('token:a', 1_000, 3, 0);
    expect(windows.grant('token:a', 1_000, 3, 999)).toMatchObject({ granted: 0, ttl: 1 });
    expect(windows.grant('token:a', 1_000, 3, 1_000)).toMatchObject({ granted: 1, ttl: 1_000 });
  });

  it('forgets windows that ended', () => {
    const windows = new QuotaWindows(1);
    windows.grant('token:a', 1_000, 3, 0);
    windows.grant('token:b', 5_000, 3, 0);
    windows.prune(2_000);
    expect(windows.size).toBe(1);
  });
});
