/**
 * Restart counting for the `docker` check's max_restarts. Docker's RestartCount does not fall
 * as time passes, so the check compares the restarts within a sliding hour instead.
 */

/** Length of the window in which max_restarts counts restarts. */
export const RESTART_WINDOW_MS = 60 * 60 * 1000;

/** A container's RestartCount as a check first saw it, at `at` (ms since the epoch). */
export interface RestartSample {
  at: number;
  count: number;
}

/** Samples of one container, kept in the check's memo between runs. */
export interface RestartHistory {
  /** Container id, because a container created anew starts its RestartCount at 0 again. */
  id: string;
  /** Oldest first, one per change of the count. */
  samples: RestartSample[];
}

/**
 * Records the count a check saw now and returns the restarts within the last window, with the
 * history to keep for the next run. The count at the window's start is the last sample taken
 * at or before it. When the history starts later (the first check, a new container id, or a
 * count lower than the last sample), the restarts count from its first sample. So restarts
 * before the first check are not counted.
 */
export function countRecentRestarts(
  previous: RestartHistory | undefined,
  id: string,
  count: number,
  now: number,
): { restarts: number; history: RestartHistory } {
  const lastCount = previous?.samples.at(-1)?.count;
  const continues = previous?.id === id && lastCount !== undefined && lastCount <= count;
  const previousSamples = continues ? previous.samples : [];
  const samples =
    lastCount === count && continues
      ? [...previousSamples]
      : [...previousSamples, { at: now, count }];
  const windowStart = now - RESTART_WINDOW_MS;
  // Samples older than the last one at or before the window's start are never read again.
  const lastBefore = samples.findLastIndex((sample) => sample.at <= windowStart);
  const recent = lastBefore > 0 ? samples.slice(lastBefore) : samples;
  const baseline = recent[0]!.count;
  return { restarts: Math.max(0, count - baseline), history: { id, samples: recent } };
}
