/**
 * The first admin token. A new installation has no tokens, so at start Slipway makes sure one
 * admin token exists: SLIPWAY_ADMIN_TOKEN when it is set, otherwise a generated one written to
 * `<data dir>/admin-token` with mode 0600, so only the owner of the data directory can read it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/env.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/database.js';
import {
  countActiveAdminTokens,
  createToken,
  findTokenByHash,
  hashToken,
} from '../store/tokens.js';

export const ADMIN_TOKEN_FILE = 'admin-token';

export interface AdminTokenResult {
  /** Where a generated token was written, when one was. */
  file: string | undefined;
  created: boolean;
}

export async function ensureAdminToken(
  config: Config,
  store: Store,
  logger: Logger,
): Promise<AdminTokenResult> {
  const configured = config.api.adminToken;
  if (configured !== undefined) {
    const existing = await findTokenByHash(store.db, hashToken(configured));
    if (existing !== undefined) return { file: undefined, created: false };
    await store.write((trx) => createToken(trx, 'admin', 'admin', configured));
    logger.info('admin token from SLIPWAY_ADMIN_TOKEN registered');
    return { file: undefined, created: true };
  }
  if ((await countActiveAdminTokens(store.db)) > 0) return { file: undefined, created: false };

  const file = path.join(config.dataDir, ADMIN_TOKEN_FILE);
  const { token } = await store.write((trx) => createToken(trx, 'admin', 'admin'));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return { file, created: true };
}
