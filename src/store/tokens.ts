import { createHash, randomBytes } from 'node:crypto';
import type BetterSqlite3 from 'better-sqlite3';
import type { Kysely } from 'kysely';
import { nowIso } from '../util/time.js';
import { param, prepare } from './prepared.js';
import type { Database, TokenRole, TokenRow } from './schema.js';

/** Tokens look like `slw_` and 32 URL-safe characters, so secret scanners can spot them. */
export const TOKEN_PREFIX = 'slw_';

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function generateToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(24).toString('base64url')}`;
}

/** Stores that the token was used at the ISO time `at`. */
export async function storeTokenUse(
  db: Kysely<Database>,
  tokenId: number,
  at: string,
): Promise<void> {
  await db.updateTable('api_tokens').set({ last_used_at: at }).where('id', '=', tokenId).execute();
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

const activeTokenById = prepare<{ id: number }>((db) =>
  db
    .selectFrom('api_tokens')
    .select('id')
    .where('id', '=', param<number>('id'))
    .where('revoked_at', 'is', null),
);

/** Returns whether the token with this row id exists and is not revoked. */
export function isTokenActive(sqlite: BetterSqlite3.Database, tokenId: number): boolean {
  return activeTokenById.get(sqlite, { id: tokenId }) !== undefined;
}

export async function listTokens(db: Kysely<Database>): Promise<TokenRow[]> {
  return db.selectFrom('api_tokens').selectAll().orderBy('name').execute();
}

/** A token picked by its row id or by its name (names are unique). */
export type TokenSelector = { id: number } | { name: string };

/**
 * Returns the tokens, revoked ones included, whose name is `text` or, when `text` is all
 * digits, whose id it is. Two rows come back when one token has that id and another that name.
 */
export async function findTokensByNameOrId(
  db: Kysely<Database>,
  text: string,
): Promise<TokenRow[]> {
  return db
    .selectFrom('api_tokens')
    .selectAll()
    .where((eb) =>
      /^[0-9]+$/.test(text)
        ? eb.or([eb('name', '=', text), eb('id', '=', Number(text))])
        : eb('name', '=', text),
    )
    .orderBy('id')
    .execute();
}

/** Revokes the token the selector picks unless it is revoked already; returns 1 or 0. */
export async function revokeToken(db: Kysely<Database>, selector: TokenSelector): Promise<number> {
  const result = await db
    .updateTable('api_tokens')
    .set({ revoked_at: nowIso() })
    .where((eb) => ('id' in selector ? eb('id', '=', selector.id) : eb('name', '=', selector.name)))
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
