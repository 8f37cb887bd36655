/** The health of the database that the size of its write-ahead log gives. */
import type { WalUse } from '../store/wal-index.js';
import type { HealthState } from './types.js';

/**
 * Default of `wal_warn`, the WAL size above which the database counts as degraded. Under
 * writes that never pause the WAL reached about 44 MB before checkpoints reset it (see
 * docs/benchmarks.md), so a WAL this large means that checkpoints cannot reset it.
 */
export const WAL_DEGRADED_BYTES = 256 * 1024 * 1024;

/** Returns the database status and details that the size of its write-ahead log gives. */
export function walHealth(
  use: WalUse | undefined,
  limitBytes = WAL_DEGRADED_BYTES,
): { status: HealthState; details: Record<string, unknown> } {
  if (use === undefined) return { status: 'healthy', details: {} };
  const wal = {
    frames: use.frames,
    checkpointed_frames: use.checkpointedFrames,
    bytes: use.bytes,
  };
  // A WAL that checkpoints have copied in full starts over at the next write, so its size
  // is no problem even when it is large.
  if (use.bytes <= limitBytes || use.checkpointedFrames >= use.frames) {
    return { status: 'healthy', details: { wal } };
  }
  return {
    status: 'degraded',
    details: {
      wal,
      reason:
        `the write-ahead log holds ${formatBytes(use.bytes)}, over ${formatBytes(limitBytes)}. ` +
        'A checkpoint starts it over only once no read transaction uses its frames, so a long ' +
        'read of the database file (a sqlite3 shell, a copy tool) makes it grow; end such ' +
        'reads, and the next checkpoint starts it over',
    },
  };
}

/** Formats `bytes` in the largest binary unit that keeps the number at least 1, such as 1.5 GiB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
