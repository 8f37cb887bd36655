import { describe, expect, it } from 'vitest';
import { JOB_ID_PATTERN, newJobId } from '../../src/jobs/ids.js';

/** Returns the 13 leading bits of a job id's hex part, which count its 10 ms slot. */
function slotOf(id: string): number {
  return Number.parseInt(id.slice(id.lastIndexOf('-') + 1), 16) >>> 19;
}

describe('job ids', () => {
  it('keeps the type-and-8-hex format', () => {
    const pattern = new RegExp(JOB_ID_PATTERN);
    for (const now of [0, 5, 81_919, 81_920, Date.now()]) {
      const id = newJobId('integration-tests', now);
      expect(id).toMatch(pattern);
      expect(id.startsWith('integration-tests-')).toBe(true);
    }
  });

  it('shares the slot within 10 ms', () => {
    const now = 1_700_000_000_003;
    const ids = Array.from({ length: 50 }, () => newJobId('ci', now));
    expect(new Set(ids.map(slotOf))).toEqual(new Set([Math.floor(now / 10) % 8192]));
    // The low 19 bits are random, so 50 ids in one slot are almost surely distinct.
    expect(new Set(ids).size).toBeGreaterThanOrEqual(49);
  });

  it('advances the slot every 10 ms', () => {
    const now = 1_700_000_000_000;
    expect(slotOf(newJobId('ci', now + 10))).toBe(slotOf(newJobId('ci', now)) + 1);
  });

  it('wraps the slot after 8192 slots', () => {
    expect(slotOf(newJobId('ci', 81_910))).toBe(8191);
    expect(slotOf(newJobId('ci', 81_920))).toBe(0);
  });
});
