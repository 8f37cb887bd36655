import { describe, expect, it } from 'vitest';
import { applyResult, type ComponentStreak } from '../../src/health/thresholds.js';
import type { HealthState } from '../../src/health/types.js';

function replay(results: HealthState[], down: number, up: number): HealthState[] {
  let streak: ComponentStreak = { status: null, failures: 0, successes: 0 };
  return results.map((result) => {
    streak = applyResult(streak, result, { down, up });
    return streak.status!;
  });
}

describe('applyResult', () => {
  it('takes the first result as it is', () => {
    expect(replay(['unhealthy'], 3, 2)).toEqual(['unhealthy']);
  });

  it('goes down after down failures in a row', () => {
    expect(replay(['healthy', 'unhealthy', 'unhealthy', 'unhealthy'], 3, 1)).toEqual([
      'healthy',
      'healthy',
      'healthy',
      'unhealthy',
    ]);
  });

  it('restarts the count after a pass', () => {
    expect(replay(['healthy', 'unhealthy', 'healthy', 'unhealthy', 'unhealthy'], 2, 1)).toEqual([
      'healthy',
      'healthy',
      'healthy',
      'healthy',
      'unhealthy',
    ]);
  });

  it('comes up after up passes in a row', () => {
    expect(
      replay(['unhealthy', 'healthy', 'unhealthy', 'healthy', 'degraded', 'healthy'], 1, 2),
    ).toEqual(['unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'degraded', 'healthy']);
  });

  it('shows degraded at once while up', () => {
    expect(replay(['healthy', 'degraded', 'unhealthy', 'degraded'], 2, 1)).toEqual([
      'healthy',
      'degraded',
      'degraded',
      'degraded',
    ]);
  });
});
