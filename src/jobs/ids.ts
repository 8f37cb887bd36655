import { randomFillSync } from 'node:crypto';

/** Milliseconds that share one value of a job id's leading bits. */
const SLOT_MS = 10;
const SLOT_BITS = 13;
const RANDOM_BITS = 32 - SLOT_BITS;

/**
 * Returns a job id: the job type, a dash and 8 hex digits, e.g. `ci-a1b2c3d4`. The first 13
 * bits count 10 ms slots, wrapping every 82 s, and the other 19 bits are random. Ids made
 * close together therefore share a prefix, so a burst of triggers adds its rows to a few pages
 * of the indexes keyed by job id (jobs, tasks, audit_log) instead of to pages all over each
 * index. `bash bench/api/cpu-per-request.sh` measured about 20% less CPU per trigger than with
 * 32 random bits. Over time the ids are spread as evenly as random ones, and the insert picks
 * a new id on the rare clash.
 */
export function newJobId(type: string, now = Date.now()): string {
  const slot = Math.floor(now / SLOT_MS) % 2 ** SLOT_BITS;
  const random = nextRandom() % 2 ** RANDOM_BITS;
  const value = slot * 2 ** RANDOM_BITS + random;
  return `${type}-${value.toString(16).padStart(8, '0')}`;
}

// Random numbers drawn 256 at a time: one randomBytes(4) call per id took about 2 % of a
// trigger's CPU time in a profile.
const randomPool = new Uint32Array(256);
let randomUsed = randomPool.length;

function nextRandom(): number {
  if (randomUsed === randomPool.length) {
    randomFillSync(randomPool);
    randomUsed = 0;
  }
  const value = randomPool[randomUsed]!;
  randomUsed += 1;
  return value;
}

export const JOB_ID_PATTERN = '^[a-z][a-z0-9-]{0,62}-[0-9a-f]{8}$';

/** A task id: the job id, the job attempt and the matrix position, e.g. `ci-a1b2c3d4.1.0`. */
export function taskId(jobId: string, jobAttempt: number, index: number): string {
  return `${jobId}.${jobAttempt}.${index}`;
}
