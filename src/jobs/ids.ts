import { randomBytes } from 'node:crypto';

/** A job id: the job type, a dash and 8 random hex digits, e.g. `ci-a1b2c3d4`. */
export function newJobId(type: string): string {
  return `${type}-${randomBytes(4).toString('hex')}`;
}

export const JOB_ID_PATTERN = '^[a-z][a-z0-9-]{0,62}-[0-9a-f]{8}$';

/** A task id: the job id, the job attempt and the matrix position, e.g. `ci-a1b2c3d4.1.0`. */
export function taskId(jobId: string, jobAttempt: number, index: number): string {
  return `${jobId}.${jobAttempt}.${index}`;
}
