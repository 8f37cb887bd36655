/**
 * GitHub Actions OIDC tokens in place of a trigger token. A workflow with the permission
 * `id-token: write` requests a token for Slipway's audience and sends it as its bearer token,
 * so no long-lived Slipway token has to be stored in GitHub. A token is accepted when the
 * issuer's key signed it (RS256, keys from the issuer's JWKS), its issuer, audience and times
 * are valid, and its repository, and its ref when SLIPWAY_OIDC_REFS is set, are allowed. It
 * then acts with role `trigger`, under the name `github:<repository>` in lower case, on the
 * jobs that job-owner.ts allows.
 */
import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { OidcConfig } from '../config/env.js';
import { issuerKeys, OidcUnavailableError, type IssuerKeysOptions } from './oidc-keys.js';

export { OidcUnavailableError };

/** Seconds by which a token's times may be off from this host's clock. */
const CLOCK_TOLERANCE_SECONDS = 30;

/** The workflow run that an accepted token names, as its claims give it. */
export interface OidcIdentity {
  /**
   * The actor name of audit rows and the `requested_by` of jobs: `github:` and the repository
   * in lower case, because GitHub compares repository names without case.
   */
  name: string;
  /** The repository as the token's claim spells it. */
  repository: string;
  /** When the token expires, in milliseconds since the epoch. */
  expiresAt: number;
  /** The claims that audit rows keep, to tell which workflow run acted. */
  claims: Record<string, string>;
}

/** A token that is not acceptable, with the rule it breaks for the error's `rule`. */
export class OidcRejection extends Error {
  constructor(
    message: string,
    readonly rule: string,
  ) {
    super(message);
    this.name = 'OidcRejection';
  }
}

/** GitHub's `owner/name`, in the characters that SLIPWAY_OIDC_REPOSITORIES accepts. */
const REPOSITORY_NAME = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/;

/** Claims copied into audit rows, when the token has them. */
const AUDITED_CLAIMS = [
  'repository',
  'ref',
  'sha',
  'workflow_ref',
  'run_id',
  'run_attempt',
  'actor',
  'event_name',
  'environment',
  'jti',
] as const;

export type OidcVerifierOptions = IssuerKeysOptions;

export class OidcVerifier {
  readonly #getKey: JWTVerifyGetKey;

  constructor(
    readonly config: OidcConfig,
    options: OidcVerifierOptions = {},
  ) {
    this.#getKey = issuerKeys(config.jwksUrl, options);
  }

  /**
   * Returns the identity of an acceptable token. Throws OidcRejection for a token that is
   * not, and OidcUnavailableError when the issuer's keys could not be fetched.
   */
  async verify(token: string): Promise<OidcIdentity> {
    const { issuer, audience } = this.config;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.#getKey, {
        issuer,
        audience,
        algorithms: ['RS256'],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        requiredClaims: ['exp', 'iat'],
      }));
    } catch (error) {
      throw this.#translate(error);
    }
    // A token for several audiences is also valid at the others, which could replay it here.
    if (Array.isArray(payload.aud) && payload.aud.length > 1) {
      throw new OidcRejection(
        `the OIDC token names ${payload.aud.length} audiences; request one only for ` +
          `SLIPWAY_OIDC_AUDIENCE (${audience})`,
        'audience',
      );
    }

    const repository = typeof payload.repository === 'string' ? payload.repository : undefined;
    if (repository === undefined) {
      throw new OidcRejection('the OIDC token has no repository claim', 'repository');
    }
    // Checked even though the issuer signed it, because `owner/*` compares a prefix and the
    // claim becomes part of the actor name.
    if (!REPOSITORY_NAME.test(repository)) {
      throw new OidcRejection(
        `the OIDC token's repository claim ${JSON.stringify(repository)} is not of the form owner/name`,
        'repository',
      );
    }
    if (!this.config.repositories.some((allowed) => matchesRepository(allowed, repository))) {
      // The allowed repositories and refs are left out of the messages, because anyone can get
      // a GitHub Actions token for any audience and would learn them.
      throw new OidcRejection(
        `the OIDC token is for repository ${repository}, which the server's ` +
          'SLIPWAY_OIDC_REPOSITORIES does not allow; an administrator of Slipway can add it',
        'repository',
      );
    }
    const ref = typeof payload.ref === 'string' ? payload.ref : '';
    const refs = this.config.refs;
    if (refs !== undefined && !refs.some((pattern) => matchesRef(pattern, ref))) {
      throw new OidcRejection(
        `the OIDC token is for ref "${ref}", which the server's SLIPWAY_OIDC_REFS does not ` +
          'allow; trigger from an allowed branch or tag, or ask an administrator of Slipway',
        'ref',
      );
    }

    const claims: Record<string, string> = {};
    for (const name of AUDITED_CLAIMS) {
      const value = payload[name];
      if (typeof value === 'string' || typeof value === 'number') claims[name] = String(value);
    }
    return {
      name: `github:${repository.toLowerCase()}`,
      repository,
      expiresAt: payload.exp! * 1000,
      claims,
    };
  }

  /** Maps a failure of jose's check to a rejection, or to unavailability of the keys. */
  #translate(error: unknown): Error {
    const { issuer, audience } = this.config;
    if (error instanceof OidcUnavailableError) return error;
    if (error instanceof errors.JWTExpired) {
      return new OidcRejection(
        'the OIDC token has expired; request a new one in the step that calls Slipway',
        'expired',
      );
    }
    if (error instanceof errors.JWTClaimValidationFailed) {
      if (error.claim === 'aud') {
        return new OidcRejection(
          `the OIDC token's audience is not ${audience} (SLIPWAY_OIDC_AUDIENCE); request it ` +
            `with that audience, for example core.getIDToken('${audience}')`,
          'audience',
        );
      }
      if (error.claim === 'iss') {
        return new OidcRejection(
          `the OIDC token's issuer is not ${issuer} (SLIPWAY_OIDC_ISSUER)`,
          'issuer',
        );
      }
      return new OidcRejection(
        `the OIDC token's ${error.claim} claim is invalid: ${error.message}`,
        error.claim,
      );
    }
    if (error instanceof errors.JWKSNoMatchingKey) {
      return new OidcRejection(
        `the OIDC token was signed with a key that ${this.config.jwksUrl} does not list`,
        'signature',
      );
    }
    if (error instanceof errors.JWSSignatureVerificationFailed) {
      return new OidcRejection(
        "the OIDC token's signature does not match the issuer's key",
        'signature',
      );
    }
    if (error instanceof errors.JOSEAlgNotAllowed) {
      return new OidcRejection('the OIDC token is not signed with RS256', 'signature');
    }
    if (error instanceof errors.JOSEError) {
      return new OidcRejection(`the OIDC token is malformed: ${error.message}`, 'format');
    }
    return error instanceof Error ? error : new Error(String(error));
  }
}

/**
 * Returns whether the bearer token has the shape of a signed JWT: three base64url parts, the
 * first a JSON object (`eyJ` is the encoding of `{"`). Generated Slipway tokens never do, but
 * a token set through the environment may.
 */
export function looksLikeJwt(token: string): boolean {
  return token.startsWith('eyJ') && /^[\w-]+\.[\w-]+\.[\w-]+$/.test(token);
}

/** Compares GitHub repository names, which ignore case; `owner/*` allows every repository of the owner. */
function matchesRepository(allowed: string, repository: string): boolean {
  const expected = allowed.toLowerCase();
  const actual = repository.toLowerCase();
  if (expected.endsWith('/*')) return actual.startsWith(expected.slice(0, -1));
  return actual === expected;
}

/** Returns whether `ref` matches `pattern`: the ref itself, or a prefix followed by `*`. */
function matchesRef(pattern: string, ref: string): boolean {
  if (pattern.endsWith('*')) return ref.startsWith(pattern.slice(0, -1));
  return ref === pattern;
}
