/**
 * The first admin token. A new installation has no tokens, so at start Slipway makes sure one
 * admin token exists: SLIPWAY_ADMIN_TOKEN when it is set, otherwise a generated one. A
 * generated token is written to `<data dir>/admin-token` with mode 0600, so only the owner
 * of the data directory can read it.
 *
 * Changing SLIPWAY_ADMIN_TOKEN rotates it: the new value is registered and the admin tokens
 * registered from earlier values are revoked in the same transaction, so an old value that
 * leaked stops working. A generated token and tokens made with `slipway token create` stay as
 * they are.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Config } from '../config/env.js';
import type { Logger } from '../log.js';
import { appendAudit } from '../store/audit.js';
import type { Store } from '../store/database.js';
import type { Database } from '../store/schema.js';
import {
  countActiveAdminTokens,
  createToken,
  findTokenByHash,
  hashToken,
} from '../store/tokens.js';
import { nowIso } from '../util/time.js';

export const ADMIN_TOKEN_FILE = 'admin-token';

export interface AdminTokenResult {
  /** Path of the file a generated token was written to, if one was generated. */
  file: string | undefined;
  created: boolean;
}

/**
 * Makes sure an admin token exists. The check and the insert share one write transaction,
 * so API processes starting together on a new database create one token, not one each.
 */
export async function ensureAdminToken(
  config: Config,
  store: Store,
  logger: Logger,
): Promise<AdminTokenResult> {
  const configured = config.api.adminToken;
  const created = await store.write(async (trx) => {
    if (configured !== undefined) {
      const existing = await findTokenByHash(trx, hashToken(configured));
      if (existing !== undefined) {
        // Set back to an earlier value: the tokens of the values after it go as well, even
        // when this one is revoked, so no value that is no longer configured keeps working.
        const revoked =
          existing.role === 'admin' ? await revokeEarlierEnvTokens(trx, existing.id) : [];
        return { existing, token: undefined, revoked };
      }
    } else if ((await countActiveAdminTokens(trx)) > 0) {
      return undefined;
    }
    const revoked = configured === undefined ? [] : await revokeEarlierEnvTokens(trx);
    const name = await freeTokenName(trx, 'admin');
    const { token } = await createToken(
      trx,
      name,
      'admin',
      configured,
      configured === undefined ? null : ADMIN_TOKEN_VARIABLE,
    );
    await appendAudit(trx, STARTUP_ACTOR, {
      action: 'token_created',
      details: {
        name,
        role: 'admin',
        origin: configured === undefined ? 'generated' : ADMIN_TOKEN_VARIABLE,
      },
    });
    return { existing: undefined, token, name, revoked };
  });

  if (created !== undefined && created.revoked.length > 0) {
    logger.warn(
      { revoked: created.revoked },
      'SLIPWAY_ADMIN_TOKEN changed: the admin tokens of its other values are revoked',
    );
  }
  if (created?.existing !== undefined) {
    if (created.existing.role !== 'admin') {
      // The value is another token's, so the API has no admin token from the variable.
      logger.warn(
        { token_name: created.existing.name, role: created.existing.role },
        `SLIPWAY_ADMIN_TOKEN is the value of token "${created.existing.name}", whose role is ` +
          `${created.existing.role}, so it is no admin token; set SLIPWAY_ADMIN_TOKEN to a new value`,
      );
    } else if (created.existing.revoked_at !== null) {
      logger.warn(
        { token_name: created.existing.name },
        'SLIPWAY_ADMIN_TOKEN is revoked and will not authenticate until it is set to a new value',
      );
    }
    return { file: undefined, created: false };
  }
  if (created === undefined) return { file: undefined, created: false };
  if (configured !== undefined) {
    logger.info({ name: created.name }, 'admin token from SLIPWAY_ADMIN_TOKEN registered');
    return { file: undefined, created: true };
  }
  const file = path.join(config.dataDir, ADMIN_TOKEN_FILE);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${created.token}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return { file, created: true };
}

const STARTUP_ACTOR = { actor: 'slipway', requestId: undefined, source: os.hostname() };
const ADMIN_TOKEN_VARIABLE = 'SLIPWAY_ADMIN_TOKEN';

/**
 * Revokes the active admin tokens that were registered from SLIPWAY_ADMIN_TOKEN, except the
 * one with id `keep`, each with an audit row, and returns their names.
 */
async function revokeEarlierEnvTokens(trx: Kysely<Database>, keep?: number): Promise<string[]> {
  let query = trx
    .selectFrom('api_tokens')
    .select(['id', 'name'])
    .where('role', '=', 'admin')
    .where('revoked_at', 'is', null)
    .where('env_variable', '=', ADMIN_TOKEN_VARIABLE);
  if (keep !== undefined) query = query.where('id', '!=', keep);
  const rows = await query.execute();
  const now = nowIso();
  for (const row of rows) {
    await trx.updateTable('api_tokens').set({ revoked_at: now }).where('id', '=', row.id).execute();
    await appendAudit(trx, STARTUP_ACTOR, {
      action: 'token_revoked',
      details: { token: row.name, count: 1, reason: 'SLIPWAY_ADMIN_TOKEN changed' },
    });
  }
  return rows.map((row) => row.name);
}

/**
 * Returns `base` when no token has that name, else `base-2`, `base-3`, ... Token names are
 * unique, and an earlier generated token may already be called `admin`.
 */
async function freeTokenName(db: Kysely<Database>, base: string): Promise<string> {
  const rows = await db
    .selectFrom('api_tokens')
    .select('name')
    .where((eb) => eb.or([eb('name', '=', base), eb('name', 'like', `${base}-%`)]))
    .execute();
  const taken = new Set(rows.map((row) => row.name));
  if (!taken.has(base)) return base;
  for (let suffix = 2; ; suffix += 1) {
    if (!taken.has(`${base}-${suffix}`)) return `${base}-${suffix}`;
  }
}
