/**
 * Cancels a job with a reason stored as given. The API rejects a cancel reason with control
 * characters, but an API older than that check stored them, and clients must still print
 * such a reason safely.
 */
import { ChangeSet } from '../../src/orchestrator/changes.js';
import { cancelJob } from '../../src/orchestrator/cancel.js';
import { findJob } from '../../src/store/jobs.js';
import type { TestServer } from './server.js';

export async function cancelWithStoredReason(
  server: TestServer,
  jobId: string,
  reason: string,
): Promise<void> {
  const changes = new ChangeSet();
  await server.context.store.write(async (trx) => {
    const job = await findJob(trx, jobId);
    if (job === undefined) throw new Error(`job ${jobId} not found`);
    await cancelJob(trx, job, reason, changes, { actor: 'test-older-api' });
  });
  changes.emit(server.context.events);
}
