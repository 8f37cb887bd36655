/**
 * Ownership of worker ids by token. A worker id belongs to the agent token it was last
 * registered with, for as long as that token is active: only that token claims tasks, reports
 * on them and changes the worker's status. Without this, any agent token could drain another
 * host's worker and then register its id. Admin tokens act for every worker.
 *
 * Registration is not checked here. A live worker's id is taken anyway (worker_id_in_use).
 * The id of a stopped worker moves to the next process that registers it, with that
 * process's token. So a container restarted with a new host name can take its id back, and
 * so can a worker given a new token before the old one is revoked.
 */
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { Principal } from './auth.js';
import { ApiError } from './errors.js';

/** Throws worker_owned when the worker id belongs to another active token. */
export async function checkWorkerOwner(
  db: Kysely<Database>,
  workerId: string,
  principal: Principal | undefined,
): Promise<void> {
  if (principal === undefined || principal.role === 'admin') return;
  const owner = await db
    .selectFrom('workers')
    .innerJoin('api_tokens', 'api_tokens.id', 'workers.token_id')
    .select(['api_tokens.id', 'api_tokens.name'])
    .where('workers.id', '=', workerId)
    .where('api_tokens.revoked_at', 'is', null)
    .executeTakeFirst();
  if (owner === undefined || owner.id === principal.tokenId) return;
  throw new ApiError(
    'worker_owned',
    `worker ${workerId} was registered with token "${owner.name}", and token ` +
      `"${principal.name}" may not act for it; use that token or an admin token`,
    'Authorization',
    'worker_owner',
    { worker_id: workerId, owner: owner.name },
  );
}
