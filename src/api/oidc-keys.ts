/**
 * The OIDC issuer's signing keys, fetched from its JWKS URL. jose fetches them, caches them for
 * 10 minutes and fetches them again for a key it does not list, at most every 30 s. Around
 * jose, a failed fetch is not repeated for JWKS_RETRY_MS, and the keys fetched before stay in
 * use for STALE_KEYS_MS. So an outage of the issuer neither sends a fetch for each request,
 * which anyone can send with a token of the right shape, nor rejects tokens those keys check.
 */
import { createLocalJWKSet, createRemoteJWKSet, errors, type JWTVerifyGetKey } from 'jose';
import type { Logger } from '../log.js';

/** Milliseconds that a fetch of the issuer's keys may take. */
const JWKS_TIMEOUT_MS = 5_000;
/** Milliseconds after a failed fetch of the keys before a request may fetch them again. */
const JWKS_RETRY_MS = 1_000;
/**
 * Milliseconds after the last successful key lookup during which the keys fetched before check
 * tokens while the issuer fails. It bounds how long a key that the issuer has dropped, perhaps
 * because it leaked, stays accepted during an outage.
 */
const STALE_KEYS_MS = 60 * 60_000;

/** The issuer's keys could not be fetched, so no token can be checked now. */
export class OidcUnavailableError extends Error {
  constructor(
    readonly jwksUrl: string,
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super(`could not fetch the OIDC signing keys from ${jwksUrl}: ${reason}; retry later`, {
      cause,
    });
    this.name = 'OidcUnavailableError';
  }
}

export interface IssuerKeysOptions {
  /** Milliseconds before a token with an unknown key makes the keys be fetched again (30 s). */
  cooldownMs?: number;
  /** Milliseconds that fetched keys are used before they are fetched again (10 min). */
  cacheMaxAgeMs?: number;
  /** Logs the first failed fetch of an outage and the fetch that ends it. */
  logger?: Logger;
}

/** A failed fetch, and the keys fetched before it, if any are recent enough to use. */
interface Failure {
  at: number;
  error: OidcUnavailableError;
  stale: JWTVerifyGetKey | undefined;
}

/**
 * Returns the key lookup for jwtVerify. A token whose key cannot be found because the keys
 * could not be fetched gets OidcUnavailableError. A token whose key the keys do not list gets
 * jose's JWKSNoMatchingKey, so that it is rejected.
 */
export function issuerKeys(jwksUrl: string, options: IssuerKeysOptions = {}): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(new URL(jwksUrl), {
    timeoutDuration: JWKS_TIMEOUT_MS,
    ...(options.cooldownMs === undefined ? {} : { cooldownDuration: options.cooldownMs }),
    ...(options.cacheMaxAgeMs === undefined ? {} : { cacheMaxAge: options.cacheMaxAgeMs }),
  });
  let failure: Failure | undefined;
  let lastSuccess = 0;

  return async (header, token) => {
    if (failure !== undefined && Date.now() - failure.at < JWKS_RETRY_MS) {
      return staleKey(failure, header, token);
    }
    try {
      const key = await remote(header, token);
      if (failure !== undefined) {
        options.logger?.info({ jwks_url: jwksUrl }, 'fetched the OIDC signing keys again');
      }
      failure = undefined;
      lastSuccess = Date.now();
      return key;
    } catch (error) {
      // jose reports a non-200 response and a malformed token with the same error class, so
      // the errors of choosing a key are rethrown here, and every other error is a failed fetch.
      if (isKeySelectionError(error)) throw error;
      const known = remote.jwks();
      const recent = known !== undefined && Date.now() - lastSuccess < STALE_KEYS_MS;
      if (failure === undefined) {
        options.logger?.warn(
          { err: error, jwks_url: jwksUrl, stale_keys: recent },
          'could not fetch the OIDC signing keys; retrying at most once a second',
        );
      }
      failure = {
        at: Date.now(),
        error: new OidcUnavailableError(jwksUrl, error),
        stale: recent ? createLocalJWKSet(known) : undefined,
      };
      return staleKey(failure, header, token);
    }
  };
}

function isKeySelectionError(error: unknown): boolean {
  return (
    error instanceof errors.JWKSNoMatchingKey ||
    error instanceof errors.JWKSMultipleMatchingKeys ||
    error instanceof errors.JOSENotSupported
  );
}

/**
 * Returns the token's key from the keys fetched before the failure. Without them, or when they
 * do not list the key, which may be a new one, it throws the failure's OidcUnavailableError.
 */
async function staleKey(
  failure: Failure,
  header: Parameters<JWTVerifyGetKey>[0],
  token: Parameters<JWTVerifyGetKey>[1],
): Promise<Awaited<ReturnType<JWTVerifyGetKey>>> {
  if (failure.stale === undefined) throw failure.error;
  try {
    return await failure.stale(header, token);
  } catch (error) {
    if (error instanceof errors.JWKSNoMatchingKey) throw failure.error;
    throw error;
  }
}
