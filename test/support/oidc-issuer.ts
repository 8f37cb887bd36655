/**
 * A stand-in on 127.0.0.1 for GitHub's Actions OIDC provider, as GitHub documents it: the
 * issuer's signing keys at /.well-known/jwks, and the token endpoint that a job with
 * `id-token: write` calls (ACTIONS_ID_TOKEN_REQUEST_URL with `audience`, authorized with
 * ACTIONS_ID_TOKEN_REQUEST_TOKEN), which responds with `{"value": "<JWT>"}`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';

export const OIDC_REPOSITORY = 'octo-org/octo-repo';
/** The token that authorizes requests to the token endpoint. */
export const OIDC_REQUEST_TOKEN = 'actions-request-token-0000';

export interface OidcIssuer {
  url: string;
  /** ACTIONS_ID_TOKEN_REQUEST_URL, with the query that GitHub's URL has. */
  requestUrl: string;
  /** Requests for the keys so far. */
  keyFetches: number;
  /** Tokens issued by the token endpoint so far. */
  issued: number;
  /** Whether the key endpoint responds with status 500. */
  failing: boolean;
  /** Seconds that the token endpoint's tokens are valid. */
  lifetimeSeconds: number;
  /** Signs a token with GitHub's claims for a push to main, changed by `claims`. */
  sign(claims?: Record<string, unknown>, key?: CryptoKey): Promise<string>;
  close(): Promise<void>;
}

/** Starts the stand-in with one RS256 key, `key-1`. */
export async function startOidcIssuer(): Promise<OidcIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid: 'key-1', alg: 'RS256', use: 'sig' };
  const server = http.createServer((request, response) => {
    void answer(request, response).catch(() => response.writeHead(500).end());
  });
  const answer = async (request: http.IncomingMessage, response: http.ServerResponse) => {
    const url = new URL(request.url ?? '/', issuer.url);
    if (url.pathname === '/.well-known/jwks') {
      issuer.keyFetches += 1;
      if (issuer.failing) {
        response.writeHead(500).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ keys: [jwk] }));
      return;
    }
    if (url.pathname === '/token') {
      const audience = url.searchParams.get('audience');
      if (request.headers.authorization !== `bearer ${OIDC_REQUEST_TOKEN}` || audience === null) {
        response.writeHead(401).end();
        return;
      }
      const now = Math.floor(Date.now() / 1000);
      const value = await issuer.sign({ aud: audience, exp: now + issuer.lifetimeSeconds });
      issuer.issued += 1;
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ count: value.length, value }));
      return;
    }
    response.writeHead(404).end();
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer: OidcIssuer = {
    url,
    requestUrl: `${url}/token?api-version=2.0`,
    keyFetches: 0,
    issued: 0,
    failing: false,
    lifetimeSeconds: 300,
    async sign(claims = {}, key = privateKey) {
      const now = Math.floor(Date.now() / 1000);
      const payload = {
        sub: `repo:${OIDC_REPOSITORY}:ref:refs/heads/main`,
        repository: OIDC_REPOSITORY,
        repository_owner: 'octo-org',
        ref: 'refs/heads/main',
        ref_type: 'branch',
        sha: 'a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2',
        workflow: 'CI',
        workflow_ref: `${OIDC_REPOSITORY}/.github/workflows/ci.yml@refs/heads/main`,
        run_id: '4242',
        run_attempt: '1',
        actor: 'octocat',
        event_name: 'push',
        jti: `jti-${Math.random()}`,
        iss: url,
        aud: 'https://slipway.test',
        iat: now,
        nbf: now - 5,
        exp: now + 300,
        ...claims,
      };
      return new SignJWT(payload)
        .setProtectedHeader({ alg: 'RS256', kid: 'key-1', typ: 'JWT' })
        .sign(key);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return issuer;
}
