/** The primary's rate-limit windows for an API cluster: blocks, limits and window ends. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Reservation } from '../../src/api/auth-failures.js';
import { QuotaWindows, SharedFailureLimit } from '../../src/api/shared-rate-limit.js';
import { createLogger } from '../../src/log.js';

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

describe('failed authentications of a cluster process', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** A quota request that the process sent to its primary. */
  interface SentRequest {
    id: number;
    key: string;
  }

  /**
   * Runs `work` with process.send replaced, and returns the quota requests it sent. The test
   * acts as the primary and grants them with `grant`.
   */
  function sentDuring(work: () => void): SentRequest[] {
    const sent: SentRequest[] = [];
    const send = process.send;
    process.send = ((message: SentRequest) => {
      sent.push(message);
      return true;
    }) as typeof process.send;
    try {
      work();
    } finally {
      process.send = send;
    }
    return sent;
  }

  /**
   * Creates the limit with its listener for the primary's messages kept aside, because the
   * test runner's own listener rejects messages it did not send. Grants go to `deliver`.
   */
  function createLimit(limit: number) {
    let deliver: ((message: unknown) => void) | undefined;
    const on = process.on;
    process.on = ((event: string, listener: (message: unknown) => void) => {
      if (event === 'message') deliver = listener;
      else on.call(process, event, listener);
      return process;
    }) as typeof process.on;
    let failures: SharedFailureLimit;
    try {
      failures = new SharedFailureLimit(limit, createLogger('silent'));
    } finally {
      process.on = on;
    }
    const grant = (request: SentRequest, granted: number, allocated: number) => {
      deliver!({ type: 'slipway:rate-limit', id: request.id, granted, allocated, ttl: 60_000 });
    };
    return { failures, grant };
  }

  it('takes back a failure while a grant is pending', async () => {
    const { failures, grant } = createLimit(2);
    let first!: Promise<Reservation>;
    const [firstRequest] = sentDuring(() => (first = failures.reserve('192.0.2.1')));
    grant(firstRequest!, 1, 1);
    const valid = await first;
    expect(valid.granted).toBe(true);

    // The block is used up, so the next reservation waits for the primary. The first
    // request's token turns out valid meanwhile.
    let second!: Promise<Reservation>;
    const [secondRequest] = sentDuring(() => (second = failures.reserve('192.0.2.1')));
    valid.release();
    grant(secondRequest!, 1, 2);
    expect((await second).granted).toBe(true);

    // Two failures were granted and one was given back, so one is left.
    let third!: Promise<Reservation>;
    const more = sentDuring(() => (third = failures.reserve('192.0.2.1')));
    for (const request of more) grant(request, 0, 2);
    expect((await third).granted).toBe(true);
    expect(more).toHaveLength(0);
  });

  it('takes nothing back into a later window', async () => {
    const start = 1_000_000;
    const clock = vi.spyOn(Date, 'now').mockReturnValue(start);
    const { failures, grant } = createLimit(1);
    let first!: Promise<Reservation>;
    const [firstRequest] = sentDuring(() => (first = failures.reserve('192.0.2.1')));
    grant(firstRequest!, 1, 1);
    const late = await first;
    expect(late.granted).toBe(true);

    // The window ends while the first request's token is looked up, and the next failure
    // opens a new one.
    clock.mockReturnValue(start + 60_001);
    let second!: Promise<Reservation>;
    const [secondRequest] = sentDuring(() => (second = failures.reserve('192.0.2.1')));
    grant(secondRequest!, 1, 1);
    expect((await second).granted).toBe(true);
    late.release();

    let third!: Promise<Reservation>;
    const more = sentDuring(() => (third = failures.reserve('192.0.2.1')));
    for (const request of more) grant(request, 0, 1);
    expect((await third).granted).toBe(false);
  });
});
