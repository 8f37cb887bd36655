import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { nowIso } from '../util/time.js';
import type { Database, TokenRole, TokenRow } from './schema.js';

/** Tokens look like `slw_` and 32 URL-safe characters, so secret scanners can spot them. */
export const TOKEN_PREFIX = 'slw_';

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function generateToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(24).toString('base64url')}`;
}

/**
 * Creates a token and returns it in clear; only its hash is stored. `envVariable` names the
 * environment variable a configured token came from.
 */
export async function createToken(
  db: Kysely<Database>,
  name: string,
  role: TokenRole,
  token: string = generateToken(),
  envVariable: string | null = null,
): Promise<{ token: string; row: TokenRow }> {
  const row = {
    env_variable: envVariable,
    name,
    role,
    token_hash: hashToken(token),
    // A token set through the environment may be short, so none of it is shown.
    prefix: token.startsWith(TOKEN_PREFIX) ? token.slice(0, TOKEN_PREFIX.length + 4) : '(env)',
    created_at: nowIso(),
    last_used_at: null,
    revoked_at: null,
  };
  const inserted = await db
    .insertInto('api_tokens')
    .values(row)
    .returningAll()
    .executeTakeFirstOrThrow();
  return { token, row: inserted };
}

export async function findTokenByHash(
  db: Kysely<Database>,
  tokenHash: string,
): Promise<TokenRow | undefined> {
  return db
    .selectFrom('api_tokens')
    .selectAll()
    .where('token_hash', '=', tokenHash)
    .executeTakeFirst();
}

export async function listTokens(db: Kysely<Database>): Promise<TokenRow[]> {
  return db.selectFrom('api_tokens').selectAll().orderBy('name').execute();
}

/** Revokes the active tokens with this name, or the one with this id; returns how many. */
export async function revokeToken(db: Kysely<Database>, nameOrId: string): Promise<number> {
  const result = await db
    .updateTable('api_tokens')
    .set({ revoked_at: nowIso() })
    .where((eb) =>
      /^[0-9]+$/.test(nameOrId)
        ? eb.or([eb('name', '=', nameOrId), eb('id', '=', Number(nameOrId))])
        : eb('name', '=', nameOrId),
    )
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export async function countActiveAdminTokens(db: Kysely<Database>): Promise<number> {
  const row = await db
    .selectFrom('api_tokens')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('role', '=', 'admin')
    .where('revoked_at', 'is', null)
    .executeTakeFirstOrThrow();
  return Number(row.count);
}
