/**
 * Bearer-token authentication. Each route names the roles it admits in its `config.roles`;
 * an `admin` token passes everywhere. Lookups are cached briefly so that a read costs no
 * database query for the token, and a revoked token stops working within TOKEN_CACHE_MS.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { Database, TokenRole } from '../store/schema.js';
import { findTokenByHash, hashToken } from '../store/tokens.js';
import { ApiError } from './errors.js';

export const TOKEN_CACHE_MS = 5_000;

export interface Principal {
  tokenId: number;
  name: string;
  role: TokenRole;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | undefined;
  }
  interface FastifyContextConfig {
    /** Roles admitted; `admin` always is. Leave undefined for public routes. */
    roles?: readonly TokenRole[];
  }
}

interface CacheEntry {
  principal: Principal | undefined;
  expiresAt: number;
}

export class TokenVerifier {
  readonly #cache = new Map<string, CacheEntry>();

  constructor(readonly db: Kysely<Database>) {}

  async verify(token: string): Promise<Principal | undefined> {
    const tokenHash = hashToken(token);
    const cached = this.#cache.get(tokenHash);
    const now = Date.now();
    if (cached !== undefined && cached.expiresAt > now) return cached.principal;
    const row = await findTokenByHash(this.db, tokenHash);
    const principal =
      row === undefined || row.revoked_at !== null
        ? undefined
        : { tokenId: row.id, name: row.name, role: row.role };
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(tokenHash, { principal, expiresAt: now + TOKEN_CACHE_MS });
    return principal;
  }

  forget(): void {
    this.#cache.clear();
  }
}

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

export function registerAuth(app: FastifyInstance, verifier: TokenVerifier): void {
  app.decorateRequest('principal', undefined);
  app.addHook('onRequest', async (request) => {
    const roles = request.routeOptions.config?.roles;
    const token = bearerToken(request);
    if (token !== undefined) request.principal = await verifier.verify(token);
    if (roles === undefined) return;
    if (token === undefined) {
      throw new ApiError(
        'unauthorized',
        'missing bearer token: send "Authorization: Bearer <token>" (create one with `slipway token create`)',
        'Authorization',
        'required',
      );
    }
    const principal = request.principal;
    if (principal === undefined) {
      throw new ApiError('unauthorized', 'unknown or revoked token', 'Authorization', 'valid');
    }
    if (principal.role !== 'admin' && !roles.includes(principal.role)) {
      const admitted = [...new Set([...roles, 'admin'])];
      throw new ApiError(
        'forbidden',
        `token "${principal.name}" has role ${principal.role}; this endpoint needs role ` +
          admitted.join(' or '),
        'Authorization',
        'role',
      );
    }
  });
}
