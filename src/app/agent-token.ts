/**
 * The agent token from SLIPWAY_AGENT_TOKEN. When the API starts with the variable set, it
 * registers the value as a token with the `agent` role. An installation can then give the same
 * value to its workers, as the compose stack's .env does, without a manual `slipway token
 * create`. Changing the value rotates the token: the row of the earlier value is
 * replaced in the same transaction, with a `token_revoked` audit row, so the earlier value
 * stops working. A value already
 * registered is left as it is, so a revoked one stays revoked until the variable changes.
 */
import os from 'node:os';
import { ConfigError, type Config } from '../config/env.js';
import type { Logger } from '../log.js';
import { appendAudit } from '../store/audit.js';
import type { Store } from '../store/database.js';
import { createToken, findTokenByHash, hashToken } from '../store/tokens.js';

export const ENV_AGENT_TOKEN_NAME = 'agent-from-env';
const AUDIT_ACTOR = { actor: 'api', source: os.hostname() };

/** Registers SLIPWAY_AGENT_TOKEN when it is set and new; returns whether a token was created. */
export async function ensureAgentToken(
  config: Config,
  store: Store,
  logger: Logger,
): Promise<boolean> {
  const configured = config.worker.token;
  if (configured === undefined) return false;
  const existing = await findTokenByHash(store.db, hashToken(configured));
  if (existing !== undefined) {
    if (existing.role !== 'agent') {
      throw new ConfigError(
        'SLIPWAY_AGENT_TOKEN',
        `is already registered as the ${existing.role} token "${existing.name}"; give workers a value of their own`,
      );
    }
    return false;
  }
  await store.write(async (trx) => {
    const earlier = await trx
      .selectFrom('api_tokens')
      .select(['id', 'prefix', 'revoked_at'])
      .where('name', '=', ENV_AGENT_TOKEN_NAME)
      .executeTakeFirst();
    // Token names are unique, so a new value replaces the earlier one in its row.
    if (earlier !== undefined) {
      await trx.deleteFrom('api_tokens').where('id', '=', earlier.id).execute();
      // `slipway token revoke` has already audited a value that it revoked.
      if (earlier.revoked_at === null) {
        await appendAudit(trx, AUDIT_ACTOR, {
          action: 'token_revoked',
          details: {
            token: ENV_AGENT_TOKEN_NAME,
            count: 1,
            prefix: earlier.prefix,
            reason: 'SLIPWAY_AGENT_TOKEN changed',
          },
        });
      }
    }
    const created = await createToken(
      trx,
      ENV_AGENT_TOKEN_NAME,
      'agent',
      configured,
      'SLIPWAY_AGENT_TOKEN',
    );
    await appendAudit(trx, AUDIT_ACTOR, {
      action: 'token_created',
      details: {
        name: ENV_AGENT_TOKEN_NAME,
        role: 'agent',
        prefix: created.row.prefix,
        from: 'SLIPWAY_AGENT_TOKEN',
        replaced_earlier_value: earlier !== undefined,
      },
    });
  });
  logger.info({ name: ENV_AGENT_TOKEN_NAME }, 'agent token from SLIPWAY_AGENT_TOKEN registered');
  return true;
}
