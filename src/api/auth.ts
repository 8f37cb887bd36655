/**
 * Bearer-token authentication. Each route names the roles it admits in its `config.roles`;
 * an `admin` token passes everywhere. Lookups are cached briefly so that a read costs no
 * database query for the token. A cached token is checked again whenever anything was
 * committed since its last check, so a revoked token stops working at the next request.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { Database, TokenRole } from '../store/schema.js';
import { findTokenByHash, hashToken } from '../store/tokens.js';
import { addressKey, type FailureLimit, type Reservation } from './auth-failures.js';
import { ApiError } from './errors.js';
import {
  looksLikeJwt,
  OidcRejection,
  OidcUnavailableError,
  type OidcIdentity,
  type OidcVerifier,
} from './oidc.js';
import { clientAddress } from './request-context.js';

export const TOKEN_CACHE_MS = 5_000;

export interface Principal {
  /** The api_tokens row, or 0 for a GitHub Actions OIDC token, which has none. */
  tokenId: number;
  name: string;
  role: TokenRole;
  /** The workflow run of an OIDC token, which audit rows record (see oidc.ts). */
  oidc?: OidcIdentity;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | undefined;
    /**
     * The database's data version (Store.dataVersion) as first read for this request, after
     * it arrived. The token check and cached reads share it, so each request reads the WAL
     * index once.
     */
    dataVersion: number | undefined;
  }
  interface FastifyContextConfig {
    /** Roles admitted; `admin` always is. Leave undefined for public routes. */
    roles?: readonly TokenRole[];
    /** Sentence that the OpenAPI description adds after the roles, for exceptions by parameter. */
    roleNote?: string;
  }
}

interface CacheEntry {
  principal: Principal | undefined;
  /** The reason an OIDC token was not accepted, for the 401 that rejects it. */
  rejection?: OidcRejection;
  expiresAt: number;
  /** The database's version when the token was last found active (see TokenRevocationCheck). */
  version: number | undefined;
}

/** The holder of the data version read for one request, which is the request itself. */
export interface VersionScope {
  dataVersion: number | undefined;
}

/**
 * Checks a cached token against the database. `version` returns a number that every commit of
 * any process changes (Store.dataVersion), and `isActive` returns whether the token id still
 * exists unrevoked. A revoke commits, so while the version stays the same no token was revoked.
 */
export interface TokenRevocationCheck {
  version: () => number;
  isActive: (tokenId: number) => boolean;
}

/**
 * Precision of api_tokens.last_used_at. A token's use is stored when a lookup finds the stored
 * time older than this, so a busy token costs one write a minute.
 */
export const LAST_USED_PRECISION_MS = 60_000;

/** Stores that the token was used at the ISO time `at`; called without waiting for it. */
export type RecordTokenUse = (tokenId: number, at: string) => void;

export class TokenVerifier {
  // Keyed by the token itself, so that a cached check costs no SHA-256; entries live
  // TOKEN_CACHE_MS, and the map is emptied when it grows past 10,000 tokens.
  readonly #cache = new Map<string, CacheEntry>();
  readonly #recordUse: RecordTokenUse | undefined;
  readonly #revocations: TokenRevocationCheck | undefined;
  readonly #oidc: OidcVerifier | undefined;

  /**
   * `recordUse` is called from lookups, which a cached token skips for TOKEN_CACHE_MS, so
   * last_used_at is kept without any work on most requests. Without `revocations`, a revoked
   * token stays accepted until its entry expires. With `oidc`, a bearer token shaped like a
   * JWT that no api_tokens row has is checked as a GitHub Actions OIDC token.
   */
  constructor(
    readonly db: Kysely<Database>,
    recordUse?: RecordTokenUse,
    revocations?: TokenRevocationCheck,
    oidc?: OidcVerifier,
  ) {
    this.#recordUse = recordUse;
    this.#revocations = revocations;
    this.#oidc = oidc;
  }

  /**
   * Returns the cached result for the token, or undefined when it must be looked up: after
   * TOKEN_CACHE_MS, or once a valid token is no longer active in the database.
   */
  cached(token: string, scope?: VersionScope, now = Date.now()): CacheEntry | undefined {
    const entry = this.#cache.get(token);
    if (entry === undefined || entry.expiresAt <= now) return undefined;
    const active = this.#stillActive(entry, scope);
    if (active === true) return entry;
    // A check that failed keeps the entry, so that wasValid still admits the token to a
    // lookup while its address is blocked.
    if (active === false) this.#cache.delete(token);
    return undefined;
  }

  /**
   * Looks the token up unless its cached result is still valid. `scope` is the request, whose
   * data version is read once and shared.
   */
  async verify(token: string, scope?: VersionScope): Promise<Principal | undefined> {
    const cached = this.cached(token, scope);
    if (cached !== undefined) return cached.principal;
    // Read before the lookup, so that a revoke committed during it changes the version.
    const version = this.#version(scope);
    const row = await findTokenByHash(this.db, hashToken(token));
    // A stored token is looked up first, because one set through the environment, such as
    // SLIPWAY_ADMIN_TOKEN, may have the shape of a JWT too.
    if (row === undefined && this.#oidc !== undefined && looksLikeJwt(token)) {
      return this.#verifyOidc(token);
    }
    const principal =
      row === undefined || row.revoked_at !== null
        ? undefined
        : { tokenId: row.id, name: row.name, role: row.role };
    const now = Date.now();
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(token, { principal, expiresAt: now + TOKEN_CACHE_MS, version });
    if (principal !== undefined && this.#recordUse !== undefined) {
      const lastUsed = row!.last_used_at === null ? Number.NaN : Date.parse(row!.last_used_at);
      if (!(now - lastUsed < LAST_USED_PRECISION_MS)) {
        this.#recordUse(principal.tokenId, new Date(now).toISOString());
      }
    }
    return principal;
  }

  /** Returns why the OIDC token was rejected at its last check, if it was. */
  rejectionOf(token: string): OidcRejection | undefined {
    return this.#cache.get(token)?.rejection;
  }

  /**
   * Checks an OIDC token and caches the result for TOKEN_CACHE_MS, or until the token expires.
   * A rejected token gets no principal and keeps its reason. When the issuer's keys cannot be
   * fetched, it throws ApiError github_unavailable and caches nothing.
   */
  async #verifyOidc(token: string): Promise<Principal | undefined> {
    const now = Date.now();
    if (this.#cache.size > 10_000) this.#cache.clear();
    try {
      const identity = await this.#oidc!.verify(token);
      const principal: Principal = {
        tokenId: 0,
        name: identity.name,
        role: 'trigger',
        oidc: identity,
      };
      const expiresAt = Math.min(now + TOKEN_CACHE_MS, identity.expiresAt);
      this.#cache.set(token, { principal, expiresAt, version: undefined });
      return principal;
    } catch (error) {
      if (error instanceof OidcRejection) {
        this.#cache.set(token, {
          principal: undefined,
          rejection: error,
          expiresAt: now + TOKEN_CACHE_MS,
          version: undefined,
        });
        return undefined;
      }
      if (error instanceof OidcUnavailableError) {
        throw new ApiError('github_unavailable', error.message, 'Authorization', 'oidc_keys');
      }
      throw error;
    }
  }

  /**
   * Returns whether the token was valid at its last lookup, even if that entry has expired. A
   * cache that has been emptied since, or a token never looked up, returns false.
   */
  wasValid(token: string): boolean {
    return this.#cache.get(token)?.principal !== undefined;
  }

  forget(): void {
    this.#cache.clear();
  }

  /**
   * Returns whether a cached valid token is still active, reading the database only when
   * something was committed since the entry's last check, or undefined when that read failed.
   * An unknown token's entry is kept until it expires, because a revoke cannot make it valid.
   */
  #stillActive(entry: CacheEntry, scope: VersionScope | undefined): boolean | undefined {
    if (entry.principal === undefined || this.#revocations === undefined) return true;
    // An OIDC token has no row to revoke; its entry expires with the token.
    if (entry.principal.oidc !== undefined) return true;
    try {
      const version = this.#readVersion(this.#revocations, scope);
      if (version === entry.version) return true;
      if (!this.#revocations.isActive(entry.principal.tokenId)) return false;
      entry.version = version;
      return true;
    } catch {
      // A full lookup follows, and it reports the same database error to the request.
      return undefined;
    }
  }

  #version(scope: VersionScope | undefined): number | undefined {
    if (this.#revocations === undefined) return undefined;
    try {
      return this.#readVersion(this.#revocations, scope);
    } catch {
      // Left undefined, so the next request checks the token again.
      return undefined;
    }
  }

  #readVersion(revocations: TokenRevocationCheck, scope: VersionScope | undefined): number {
    if (scope === undefined) return revocations.version();
    scope.dataVersion ??= revocations.version();
    return scope.dataVersion;
  }
}

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

export function registerAuth(
  app: FastifyInstance,
  verifier: TokenVerifier,
  failures?: FailureLimit,
): void {
  app.decorateRequest('principal', undefined);
  app.decorateRequest('dataVersion', undefined);
  // A callback hook rather than an async one: most requests carry a token that is cached,
  // and then nothing here needs to wait.
  app.addHook('onRequest', (request, reply, done) => {
    if (request.headers.authorization !== undefined && hasSecondAuthorization(request)) {
      done(
        new ApiError(
          'validation_failed',
          'the request has more than one Authorization header; send one: "Authorization: Bearer <token>"',
          'Authorization',
          'single',
        ),
      );
      return;
    }
    const token = bearerToken(request);
    const roles = request.routeOptions.config?.roles;
    const finish = (principal: Principal | undefined) => {
      request.principal = principal;
      done(admit(request.headers.authorization, token, principal, roles));
    };
    /** Ends a request that failed authentication, with 429 when its address has none left. */
    const finishFailed = (reservation: Reservation | undefined) => {
      request.principal = undefined;
      const limited =
        reservation === undefined
          ? undefined
          : limitFailure(request, reply, reservation, failures!);
      const rejection = token === undefined ? undefined : verifier.rejectionOf(token);
      done(limited ?? admit(request.headers.authorization, token, undefined, roles, rejection));
    };
    /** Reserves a failure of the request's address, which may mean waiting for the primary. */
    const reserve = (then: (reservation: Reservation | undefined) => void) => {
      if (failures === undefined) {
        then(undefined);
        return;
      }
      const reservation = failures.reserve(clientAddress(request));
      if (reservation instanceof Promise) reservation.then(then, done);
      else then(reservation);
    };

    if (token === undefined) {
      // A public route does not need a token, so a request without one has not failed.
      if (roles === undefined) finish(undefined);
      else reserve(finishFailed);
      return;
    }
    const cached = verifier.cached(token, request);
    if (cached !== undefined) {
      if (cached.principal !== undefined) finish(cached.principal);
      else reserve(finishFailed);
      return;
    }
    // A token that was valid before is looked up without a reservation, so that its owner
    // keeps working while its address is blocked.
    if (verifier.wasValid(token)) {
      verifier.verify(token, request).then((principal) => {
        if (principal !== undefined) finish(principal);
        else reserve(finishFailed);
      }, done);
      return;
    }
    reserve((reservation) => {
      // A blocked address gets no lookup, so that a right guess gets the same 429 as a wrong one.
      if (reservation?.granted === false) {
        finishFailed(reservation);
        return;
      }
      verifier.verify(token, request).then(
        (principal) => {
          if (principal === undefined) {
            finishFailed(reservation);
            return;
          }
          reservation?.release();
          finish(principal);
        },
        (error: Error) => {
          // The request gets the database error and not 401, so it has not failed to
          // authenticate.
          reservation?.release();
          done(error);
        },
      );
    });
  });
}

/**
 * Returns 429 for a request that failed authentication after its address used up its failures
 * in the current minute, and logs the first such request of the minute. On a route without
 * roles nothing is rejected, and the request goes on without a principal.
 */
function limitFailure(
  request: FastifyRequest,
  reply: FastifyReply,
  reservation: Reservation,
  failures: FailureLimit,
): ApiError | undefined {
  if (reservation.granted) return undefined;
  if (reservation.firstRejection) {
    request.log.warn(
      {
        address: addressKey(clientAddress(request)),
        limit: failures.limit,
        retryAfter: reservation.retryAfterSeconds,
      },
      'too many failed authentications from one address; rejecting its attempts until the minute ends',
    );
  }
  if (request.routeOptions.config?.roles === undefined) return undefined;
  reply.header('retry-after', String(reservation.retryAfterSeconds));
  return new ApiError(
    'rate_limited',
    `more than ${failures.limit} failed authentications from ${addressKey(clientAddress(request))} in a ` +
      `minute (API_AUTH_FAILURE_LIMIT). Until the minute ends, in ${reservation.retryAfterSeconds} s, ` +
      'only tokens that the server accepted before the lockout keep working from it',
    'Authorization',
    'rate',
  );
}

/**
 * Returns whether the request carries more than one Authorization header line. Node's parser
 * (checked on Node 20) keeps the first in `headers.authorization` and discards the others, so
 * a proxy that reads the last one would check another token than Slipway does. A sender must
 * not repeat a header whose value is not a comma-separated list (RFC 7230, section 3.2.2), and
 * Authorization carries one set of credentials, so such a request is malformed.
 */
function hasSecondAuthorization(request: FastifyRequest): boolean {
  return headerCount(request, 'authorization') > 1;
}

/**
 * Counts the request's header lines named `name` (lower case). Node keeps only the first
 * Authorization line and joins repeated custom headers with ", ", so only the raw headers
 * show that a header came twice.
 */
export function headerCount(request: FastifyRequest, name: string): number {
  const raw = request.raw.rawHeaders;
  let count = 0;
  for (let index = 0; index < raw.length; index += 2) {
    if (raw[index]!.toLowerCase() === name) count += 1;
  }
  return count;
}

/** Returns the error that rejects the request, or undefined when the route admits it. */
function admit(
  header: string | undefined,
  token: string | undefined,
  principal: Principal | undefined,
  roles: readonly TokenRole[] | undefined,
  rejection?: OidcRejection,
): ApiError | undefined {
  if (roles === undefined) return undefined;
  if (token === undefined) {
    // A Bearer header with more or less than one token, as opposed to another scheme.
    if (header !== undefined && /^bearer\b/i.test(header)) {
      return new ApiError(
        'unauthorized',
        'malformed Authorization header: send "Authorization: Bearer <token>" with the token and nothing after it',
        'Authorization',
        'format',
      );
    }
    return new ApiError(
      'unauthorized',
      'missing bearer token: send "Authorization: Bearer <token>" (create one with `slipway token create`)',
      'Authorization',
      'required',
    );
  }
  if (rejection !== undefined) {
    return new ApiError('unauthorized', rejection.message, 'Authorization', rejection.rule);
  }
  if (principal === undefined) {
    return new ApiError('unauthorized', 'unknown or revoked token', 'Authorization', 'valid');
  }
  if (principal.role !== 'admin' && !roles.includes(principal.role)) {
    const admitted = [...new Set([...roles, 'admin'])];
    return new ApiError(
      'forbidden',
      `token "${principal.name}" has role ${principal.role}; this endpoint needs role ` +
        admitted.join(' or '),
      'Authorization',
      'role',
    );
  }
  return undefined;
}
