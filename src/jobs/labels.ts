/**
 * Names that mark what Slipway creates outside its database: container labels and workspace
 * folders. Each installation has an instance id (from its database path), so a sweep removes
 * only what its own installation left behind, never another one's on the same engine.
 */
import { createHash } from 'node:crypto';

export const LABEL_MANAGED = 'slipway.managed';
export const LABEL_INSTANCE = 'slipway.instance';
export const LABEL_JOB = 'slipway.job';
export const LABEL_TASK = 'slipway.task';
export const LABEL_ATTEMPT = 'slipway.attempt';

/** A short stable id of the installation that owns the database at `dbPath`. */
export function instanceId(dbPath: string): string {
  return createHash('sha256').update(dbPath).digest('hex').slice(0, 12);
}
