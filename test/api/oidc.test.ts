/**
 * GitHub Actions OIDC tokens in place of a trigger token, against a stand-in for GitHub's
 * issuer (test/support/oidc-issuer.ts) that signs tokens with the claims GitHub documents.
 */
import { Writable } from 'node:stream';
import { generateKeyPair, SignJWT } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OidcRejection, OidcUnavailableError, OidcVerifier } from '../../src/api/oidc.js';
import { ConfigError, loadConfig } from '../../src/config/env.js';
import type { Logger } from '../../src/log.js';
import { AgentClient } from '../github/agent-client.js';
import {
  OIDC_REPOSITORY as REPOSITORY,
  startOidcIssuer,
  type OidcIssuer,
} from '../support/oidc-issuer.js';
import { startTestServer, type TestServer } from '../support/server.js';

const AUDIENCE = 'https://slipway.test';

function oidcEnv(issuer: string): Record<string, string> {
  return {
    SLIPWAY_OIDC_AUDIENCE: AUDIENCE,
    SLIPWAY_OIDC_ISSUER: issuer,
    SLIPWAY_OIDC_REPOSITORIES: REPOSITORY,
    SLIPWAY_OIDC_REFS: 'refs/heads/main,refs/tags/v*',
  };
}

describe('GitHub Actions OIDC tokens', () => {
  let issuer: OidcIssuer;
  let server: TestServer;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    server = await startTestServer({ ...oidcEnv(issuer.url), API_RATE_LIMIT: '0' });
  });
  afterAll(async () => {
    await server?.close();
    await issuer?.close();
  });

  const trigger = (token: string, commit = 'abc1234') =>
    server.request('POST', '/api/trigger/ci', { token, body: { commit, branch: 'main' } });

  it('triggers a job as the repository', async () => {
    const response = await trigger(await issuer.sign({ run_id: '9001' }), 'abc1001');
    expect(response.status, response.text).toBe(201);
    const jobId = response.body.job_id as string;

    const audit = await server.request('GET', `/api/admin/audit-log?job_id=${jobId}`, {
      token: server.adminToken,
    });
    const entries = audit.body.entries as Array<{
      action: string;
      actor: string;
      details: Record<string, unknown>;
    }>;
    const row = entries.find((entry) => entry.action === 'job_triggered');
    expect(row?.actor).toBe(`github:${REPOSITORY}`);
    expect(row?.details.oidc).toMatchObject({
      repository: REPOSITORY,
      run_id: '9001',
      run_attempt: '1',
      actor: 'octocat',
      workflow_ref: `${REPOSITORY}/.github/workflows/ci.yml@refs/heads/main`,
    });
  });

  it('accepts an allowed tag', async () => {
    const response = await trigger(await issuer.sign({ ref: 'refs/tags/v1.2.0' }), 'abc1002');
    expect(response.status, response.text).toBe(201);
  });

  it.each([
    ['audience', { aud: 'https://github.com/octo-org' }, /SLIPWAY_OIDC_AUDIENCE/],
    ['audience', { aud: [AUDIENCE, 'https://other.example'] }, /only for SLIPWAY_OIDC_AUDIENCE/],
    ['expired', { iat: 1_000, nbf: 1_000, exp: 2_000 }, /expired/],
    ['repository', { repository: 'evil-org/octo-repo' }, /evil-org\/octo-repo/],
    ['ref', { ref: 'refs/heads/feature' }, /refs\/heads\/feature/],
    ['issuer', { iss: 'https://token.actions.githubusercontent.com' }, /SLIPWAY_OIDC_ISSUER/],
  ])('rejects a wrong %s', async (rule, claims, message) => {
    const response = await trigger(await issuer.sign(claims));
    expect(response.status, response.text).toBe(401);
    expect(response.body.code).toBe('unauthorized');
    expect(response.body.rule).toBe(rule);
    expect(response.body.field).toBe('Authorization');
    expect(response.body.error).toMatch(message);
  });

  it('keeps the allowed repositories and refs private', async () => {
    const repository = await trigger(await issuer.sign({ repository: 'evil-org/octo-repo' }));
    expect(repository.body.rule).toBe('repository');
    expect(repository.body.error).toContain('SLIPWAY_OIDC_REPOSITORIES');
    expect(repository.body.error).not.toContain(REPOSITORY);

    const ref = await trigger(await issuer.sign({ ref: 'refs/heads/feature' }));
    expect(ref.body.rule).toBe('ref');
    expect(ref.body.error).toContain('SLIPWAY_OIDC_REFS');
    expect(ref.body.error).not.toContain('refs/heads/main');
    expect(ref.body.error).not.toContain('refs/tags/v*');
  });

  it('rejects a token signed with another key', async () => {
    const other = await generateKeyPair('RS256');
    const response = await trigger(await issuer.sign({}, other.privateKey));
    expect(response.status, response.text).toBe(401);
    expect(response.body.rule).toBe('signature');
  });

  it('rejects a tampered token', async () => {
    const [header, , signature] = (await issuer.sign()).split('.');
    const payload = Buffer.from(
      JSON.stringify({ repository: REPOSITORY, aud: AUDIENCE, iss: issuer.url }),
    ).toString('base64url');
    const response = await trigger(`${header}.${payload}.${signature}`);
    expect(response.status, response.text).toBe(401);
  });

  it('gives role trigger only', async () => {
    const response = await server.request('GET', '/api/admin/audit-log', {
      token: await issuer.sign(),
    });
    expect(response.status, response.text).toBe(403);
    expect(response.body.error).toContain(`github:${REPOSITORY}`);
  });

  it('keeps unknown tokens of other shapes unknown', async () => {
    const response = await trigger('slw_not-a-token-0000000000000000000000');
    expect(response.status).toBe(401);
    expect(response.body.error).toBe('unknown or revoked token');
  });

  it('fetches the keys once for many tokens', async () => {
    const before = issuer.keyFetches;
    for (let index = 0; index < 5; index += 1) {
      expect((await trigger(await issuer.sign(), `abc2${index}00`)).status).toBe(201);
    }
    expect(issuer.keyFetches - before).toBe(0);
  });
});

describe('OIDC with environment tokens shaped like a JWT', () => {
  // Three base64url parts, the first starting with `eyJ`, as an operator might choose them.
  const adminToken = 'eyJhZG1pbiI6InRva2VuIn0.eyJzZXQiOiJieSBoYW5kIn0.c2VjcmV0LXBhcnQtMDAwMA';
  const agentToken = 'eyJhZ2VudCI6InRva2VuIn0.eyJzZXQiOiJieSBoYW5kIn0.c2VjcmV0LXBhcnQtMDAwMQ';
  let issuer: OidcIssuer;
  let server: TestServer;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    server = await startTestServer({
      ...oidcEnv(issuer.url),
      SLIPWAY_ADMIN_TOKEN: adminToken,
      SLIPWAY_AGENT_TOKEN: agentToken,
    });
  });
  afterAll(async () => {
    await server?.close();
    await issuer?.close();
  });

  it('accepts SLIPWAY_ADMIN_TOKEN', async () => {
    const response = await server.request('GET', '/api/admin/audit-log', { token: adminToken });
    expect(response.status, response.text).toBe(200);
    expect(issuer.keyFetches).toBe(0);
  });

  it('accepts SLIPWAY_AGENT_TOKEN', async () => {
    const response = await server.request('GET', '/metrics', { token: agentToken });
    expect(response.status, response.text).toBe(200);
    expect(issuer.keyFetches).toBe(0);
  });

  it('keeps accepting OIDC tokens', async () => {
    const response = await server.request('POST', '/api/trigger/ci', {
      token: await issuer.sign(),
      body: { commit: 'abc5001' },
    });
    expect(response.status, response.text).toBe(201);
  });

  it('checks other JWT-shaped tokens as OIDC tokens', async () => {
    const response = await server.request('GET', '/api/admin/audit-log', {
      token: `${adminToken}B`,
    });
    expect(response.status, response.text).toBe(401);
    expect(response.body.rule).toBe('format');
    expect(response.body.error).toMatch(/^the OIDC token is malformed/);
  });
});

describe('OIDC when the issuer does not answer', () => {
  let issuer: OidcIssuer;
  let server: TestServer;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    issuer.failing = true;
    server = await startTestServer(oidcEnv(issuer.url));
  });
  afterAll(async () => {
    await server?.close();
    await issuer?.close();
  });

  it('fetches the keys at most once a second while they fail', async () => {
    const before = issuer.keyFetches;
    // Tokens that anyone can make: GitHub's shape, with a signature that is never checked.
    const header = Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'key-9' })).toString(
      'base64url',
    );
    for (let index = 0; index < 10; index += 1) {
      const payload = Buffer.from(JSON.stringify({ index })).toString('base64url');
      const response = await server.request('POST', '/api/trigger/ci', {
        token: `${header}.${payload}.AAAA`,
        body: { commit: 'abc1234' },
      });
      expect(response.status, response.text).toBe(502);
    }
    // The requests take well under a second, and a second of them could start a second fetch.
    expect(issuer.keyFetches - before).toBeLessThanOrEqual(2);
  });

  it('answers 502 and creates no job', async () => {
    const response = await server.request('POST', '/api/trigger/ci', {
      token: await issuer.sign(),
      body: { commit: 'abc1234' },
    });
    expect(response.status, response.text).toBe(502);
    expect(response.body.code).toBe('github_unavailable');
    expect(response.body.error).toContain('/.well-known/jwks');
    const jobs = await server.request('GET', '/api/admin/jobs', { token: server.adminToken });
    expect(jobs.body.jobs).toEqual([]);

    // Once the issuer responds again and the retry delay has passed, a token is accepted.
    issuer.failing = false;
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const retried = await server.request('POST', '/api/trigger/ci', {
      token: await issuer.sign(),
      body: { commit: 'abc1234' },
    });
    expect(retried.status, retried.text).toBe(201);
  });
});

describe('OIDC keys while the issuer fails', () => {
  let issuer: OidcIssuer;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
  });
  afterAll(async () => {
    await issuer?.close();
  });

  /** A verifier whose keys are never fresh, so that every token makes it fetch them. */
  const verifier = (logger?: Logger) =>
    new OidcVerifier(
      {
        issuer: issuer.url,
        jwksUrl: `${issuer.url}/.well-known/jwks`,
        audience: AUDIENCE,
        repositories: [REPOSITORY],
        refs: undefined,
      },
      { cacheMaxAgeMs: 0, logger },
    );

  it('checks tokens with the keys fetched last', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk));
        callback();
      },
    });
    issuer.failing = false;
    const oidc = verifier(pino({ level: 'info' }, sink));
    expect((await oidc.verify(await issuer.sign())).repository).toBe(REPOSITORY);

    issuer.failing = true;
    const before = issuer.keyFetches;
    expect((await oidc.verify(await issuer.sign())).repository).toBe(REPOSITORY);
    expect((await oidc.verify(await issuer.sign())).repository).toBe(REPOSITORY);
    expect(issuer.keyFetches - before).toBe(1);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, stale_keys: true });
  });

  it('reports a key missing from the last keys as unavailable', async () => {
    issuer.failing = false;
    const oidc = verifier();
    await oidc.verify(await issuer.sign());

    issuer.failing = true;
    const other = await generateKeyPair('RS256');
    const token = await new SignJWT({ repository: REPOSITORY })
      .setProtectedHeader({ alg: 'RS256', kid: 'key-2' })
      .setIssuer(issuer.url)
      .setAudience(AUDIENCE)
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(other.privateKey);
    await expect(oidc.verify(token)).rejects.toThrow(OidcUnavailableError);
  });

  it('reports unavailable without keys fetched before', async () => {
    issuer.failing = true;
    await expect(verifier().verify(await issuer.sign())).rejects.toThrow(OidcUnavailableError);
  });
});

describe('OIDC repository patterns', () => {
  let issuer: OidcIssuer;
  let oidc: OidcVerifier;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    oidc = new OidcVerifier({
      issuer: issuer.url,
      jwksUrl: `${issuer.url}/.well-known/jwks`,
      audience: AUDIENCE,
      repositories: ['octo-org/*'],
      refs: undefined,
    });
  });
  afterAll(async () => {
    await issuer?.close();
  });

  it.each(['octo-org/octo-repo', 'Octo-Org/Other.repo_2'])(
    'accepts %s for owner/*',
    async (name) => {
      const identity = await oidc.verify(await issuer.sign({ repository: name }));
      expect(identity.repository).toBe(name);
      expect(identity.name).toBe(`github:${name.toLowerCase()}`);
    },
  );

  it.each([
    'octo-org-evil/x',
    'octo-org/',
    'octo-org//x',
    'octo-org/x/y',
    'octo-org/x:y',
    '/octo-org/x',
  ])('rejects %s for owner/*', async (name) => {
    const rejection = oidc.verify(await issuer.sign({ repository: name }));
    await expect(rejection).rejects.toThrow(OidcRejection);
    await expect(rejection).rejects.toMatchObject({ rule: 'repository' });
  });
});

describe('OIDC rate limit', () => {
  let issuer: OidcIssuer;
  let server: TestServer;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    server = await startTestServer({ ...oidcEnv(issuer.url), API_RATE_LIMIT: '3' });
  });
  afterAll(async () => {
    await server?.close();
    await issuer?.close();
  });

  it('counts every token of a repository together', async () => {
    const statuses: number[] = [];
    for (let index = 0; index < 4; index += 1) {
      const response = await server.request('POST', '/api/trigger/ci', {
        token: await issuer.sign(),
        body: { commit: `abc3${index}00` },
      });
      statuses.push(response.status);
    }
    expect(statuses).toEqual([201, 201, 201, 429]);
  });
});

describe('OIDC repository names in another case', () => {
  let issuer: OidcIssuer;
  let server: TestServer;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    // The allowed name in another case than the claims, as GitHub compares names without case.
    server = await startTestServer({
      ...oidcEnv(issuer.url),
      SLIPWAY_OIDC_REPOSITORIES: 'Octo-Org/Octo-Repo',
      API_RATE_LIMIT: '3',
    });
  });
  afterAll(async () => {
    await server?.close();
    await issuer?.close();
  });

  it('share one actor name and one rate limit', async () => {
    const claims = ['octo-org/octo-repo', 'Octo-Org/Octo-Repo', 'OCTO-ORG/OCTO-REPO'];
    const jobIds: string[] = [];
    for (const [index, repository] of claims.entries()) {
      const response = await server.request('POST', '/api/trigger/ci', {
        token: await issuer.sign({ repository }),
        body: { commit: `abc6${index}00` },
      });
      expect(response.status, response.text).toBe(201);
      jobIds.push(response.body.job_id as string);
    }
    const fourth = await server.request('POST', '/api/trigger/ci', {
      token: await issuer.sign({ repository: 'octo-ORG/octo-REPO' }),
      body: { commit: 'abc6300' },
    });
    expect(fourth.status, fourth.text).toBe(429);

    // Two reads, since the admin token has a limit of 3 requests a minute as well.
    const jobs = await server.request('GET', '/api/admin/jobs', { token: server.adminToken });
    const audit = await server.request('GET', '/api/admin/audit-log?action=job_triggered', {
      token: server.adminToken,
    });
    const listed = jobs.body.jobs as Array<{ id: string; requested_by: string }>;
    const entries = audit.body.entries as Array<{
      job_id: string;
      actor: string;
      details: { oidc?: { repository?: string } };
    }>;
    for (const [index, jobId] of jobIds.entries()) {
      const job = listed.find((item) => item.id === jobId);
      expect(job?.requested_by).toBe('github:octo-org/octo-repo');
      const row = entries.find((entry) => entry.job_id === jobId);
      expect(row?.actor).toBe('github:octo-org/octo-repo');
      // The claims keep the spelling of the token.
      expect(row?.details.oidc?.repository).toBe(claims[index]);
    }
  });
});

describe('OIDC job ownership', () => {
  const OTHER = 'octo-org/other-repo';
  let issuer: OidcIssuer;
  let server: TestServer;
  let triggerToken: string;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    server = await startTestServer({
      ...oidcEnv(issuer.url),
      SLIPWAY_OIDC_REPOSITORIES: 'octo-org/*',
      API_RATE_LIMIT: '0',
    });
    triggerToken = await server.token('trigger', 'stored-trigger');
  });
  afterAll(async () => {
    await server?.close();
    await issuer?.close();
  });

  const oidcToken = (repository: string) => issuer.sign({ repository });

  async function triggerAs(token: string, commit: string): Promise<string> {
    const response = await server.request('POST', '/api/trigger/ci', { token, body: { commit } });
    expect(response.status, response.text).toBe(201);
    return response.body.job_id as string;
  }

  const jobStatus = async (jobId: string) =>
    (await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken })).body.status;

  function expectJobOwnerError(
    response: Awaited<ReturnType<TestServer['request']>>,
    requestedBy: string,
  ) {
    expect(response.status, response.text).toBe(403);
    expect(response.body.code).toBe('forbidden');
    expect(response.body.field).toBe('Authorization');
    expect(response.body.rule).toBe('job_owner');
    expect(response.body.error).toContain(`triggered by "${requestedBy}"`);
  }

  it('cancels only jobs of its repository', async () => {
    const own = await triggerAs(await oidcToken(REPOSITORY), 'abc7001');
    const other = await triggerAs(await oidcToken(OTHER), 'abc7002');
    const stored = await triggerAs(triggerToken, 'abc7003');
    const otherBefore = await jobStatus(other);
    const storedBefore = await jobStatus(stored);

    const cancelOther = await server.request('POST', `/api/job/${other}/cancel`, {
      token: await oidcToken(REPOSITORY),
    });
    expectJobOwnerError(cancelOther, `github:${OTHER}`);
    expect(await jobStatus(other)).toBe(otherBefore);

    const cancelStored = await server.request('POST', `/api/job/${stored}/cancel`, {
      token: await oidcToken(REPOSITORY),
    });
    expectJobOwnerError(cancelStored, 'stored-trigger');
    expect(await jobStatus(stored)).toBe(storedBefore);

    // The same repository in another case is the same owner.
    const cancelOwn = await server.request('POST', `/api/job/${own}/cancel`, {
      token: await oidcToken('Octo-Org/Octo-Repo'),
    });
    expect(cancelOwn.status, cancelOwn.text).toBe(202);
    expect(await jobStatus(own)).toBe('cancelled');

    // A stored trigger token still cancels any job.
    for (const jobId of [other, stored]) {
      const response = await server.request('POST', `/api/job/${jobId}/cancel`, {
        token: triggerToken,
      });
      expect(response.status, response.text).toBe(202);
    }
  });

  it('retries only jobs of its repository', async () => {
    const own = await triggerAs(await oidcToken(REPOSITORY), 'abc7011');
    const other = await triggerAs(await oidcToken(OTHER), 'abc7012');
    for (const jobId of [own, other]) {
      await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
    }

    const retryOther = await server.request('POST', `/api/job/${other}/retry`, {
      token: await oidcToken(REPOSITORY),
    });
    expectJobOwnerError(retryOther, `github:${OTHER}`);
    expect(await jobStatus(other)).toBe('cancelled');

    const retryOwn = await server.request('POST', `/api/job/${own}/retry`, {
      token: await oidcToken(REPOSITORY),
    });
    expect(retryOwn.status, retryOwn.text).toBe(201);
    expect(retryOwn.body.attempt).toBe(2);

    const retryByStored = await server.request('POST', `/api/job/${other}/retry`, {
      token: triggerToken,
    });
    expect(retryByStored.status, retryByStored.text).toBe(201);

    // Nothing stays queued for the log test's worker.
    for (const jobId of [own, other]) {
      await server.request('POST', `/api/job/${jobId}/cancel`, { token: server.adminToken });
    }
  });

  it('reads the logs of jobs of its repository only', async () => {
    const agent = await AgentClient.register(server, 'oidc-owner-worker');
    const runJob = async (token: string, commit: string, output: string) => {
      const jobId = await triggerAs(token, commit);
      const [task] = await agent.claimJob(jobId, 1);
      await agent.log(task!, output);
      await agent.finish(task!, 'success');
      return jobId;
    };
    const own = await runJob(await oidcToken(REPOSITORY), 'abc7021', 'own output\n');
    const other = await runJob(await oidcToken(OTHER), 'abc7022', 'other secret\n');
    const logsOf = async (jobId: string, token: string) =>
      server.request('GET', `/api/job/${jobId}/logs`, { token });

    const ownLogs = await logsOf(own, await oidcToken(REPOSITORY));
    expect(ownLogs.status, ownLogs.text).toBe(200);
    expect(ownLogs.text).toContain('own output');

    const otherLogs = await logsOf(other, await oidcToken(REPOSITORY));
    expectJobOwnerError(otherLogs, `github:${OTHER}`);
    expect(otherLogs.text).not.toContain('other secret');

    // The job's status stays readable.
    const otherJob = await server.request('GET', `/api/job/${other}`, {
      token: await oidcToken(REPOSITORY),
    });
    expect(otherJob.status, otherJob.text).toBe(200);
    expect(otherJob.body.status).toBe('success');

    const byOwner = await logsOf(other, await oidcToken(OTHER));
    expect(byOwner.status, byOwner.text).toBe(200);
    expect(byOwner.text).toContain('other secret');

    const readToken = await server.token('read', 'stored-read');
    for (const token of [triggerToken, readToken]) {
      const response = await logsOf(other, token);
      expect(response.status, response.text).toBe(200);
      expect(response.text).toContain('other secret');
    }
  });

  it('triggers only for its own GitHub run', async () => {
    // Another repository names the run that this one will trigger for, so that its job would
    // be found in place of this repository's job, whose logs it then could not read.
    const squat = await server.request('POST', '/api/trigger/ci', {
      token: await issuer.sign({ repository: OTHER, run_id: '7100' }),
      body: { commit: 'abc7031', github_run_id: '7200', github_run_attempt: 1 },
    });
    expect(squat.status, squat.text).toBe(403);
    expect(squat.body.code).toBe('forbidden');
    expect(squat.body.field).toBe('github_run_id');
    expect(squat.body.rule).toBe('oidc_run');
    expect(squat.body.error).toBe(
      'github_run_id 7200 is not the workflow run of the OIDC token (run 7100); an OIDC token ' +
        'triggers only for its own run, so send github_run_id 7100 or leave it out',
    );

    const own = await server.request('POST', '/api/trigger/ci', {
      token: await issuer.sign({ repository: REPOSITORY, run_id: '7200' }),
      body: { commit: 'abc7032', github_run_id: '07200', github_run_attempt: 1 },
    });
    expect(own.status, own.text).toBe(201);
    const job = await server.request('GET', `/api/job/${own.body.job_id as string}`, {
      token: server.adminToken,
    });
    expect(job.body.requested_by).toBe(`github:${REPOSITORY}`);
    expect(job.body.commit).toBe('abc7032');
    await server.request('POST', `/api/job/${own.body.job_id as string}/cancel`, {
      token: server.adminToken,
    });
  });
});

describe('OIDC settings', () => {
  const load = (env: Record<string, string>) => () =>
    loadConfig({ SLIPWAY_DATA_DIR: '/tmp/slipway-oidc-config', ...env });

  it('needs repositories with an audience', () => {
    expect(load({ SLIPWAY_OIDC_AUDIENCE: AUDIENCE })).toThrow(ConfigError);
    expect(load({ SLIPWAY_OIDC_AUDIENCE: AUDIENCE })).toThrow(/SLIPWAY_OIDC_REPOSITORIES/);
  });

  it('rejects plain http to another host', () => {
    const base = { SLIPWAY_OIDC_AUDIENCE: AUDIENCE, GITHUB_REPOSITORY: REPOSITORY };
    expect(load({ ...base, SLIPWAY_OIDC_ISSUER: 'http://issuer.example' })).toThrow(
      /SLIPWAY_OIDC_JWKS_URL: must be an https URL/,
    );
    expect(load({ ...base, SLIPWAY_OIDC_JWKS_URL: 'http://keys.example/jwks' })).toThrow(
      /SLIPWAY_OIDC_JWKS_URL: must be an https URL/,
    );
    const local = load({ ...base, SLIPWAY_OIDC_ISSUER: 'http://127.0.0.1:8080' })();
    expect(local.oidc?.jwksUrl).toBe('http://127.0.0.1:8080/.well-known/jwks');
  });

  it('defaults repositories to GITHUB_REPOSITORY', () => {
    const config = load({ SLIPWAY_OIDC_AUDIENCE: AUDIENCE, GITHUB_REPOSITORY: REPOSITORY })();
    expect(config.oidc).toEqual({
      issuer: 'https://token.actions.githubusercontent.com',
      jwksUrl: 'https://token.actions.githubusercontent.com/.well-known/jwks',
      audience: AUDIENCE,
      repositories: [REPOSITORY],
      refs: undefined,
    });
  });

  it('rejects an invalid repository', () => {
    const env = { SLIPWAY_OIDC_AUDIENCE: AUDIENCE, SLIPWAY_OIDC_REPOSITORIES: 'octo-org' };
    expect(load(env)).toThrow(/SLIPWAY_OIDC_REPOSITORIES: must be a comma-separated list/);
  });

  it('rejects an invalid ref', () => {
    const env = { ...oidcEnv('https://issuer.test'), SLIPWAY_OIDC_REFS: 'main' };
    expect(load(env)).toThrow(/SLIPWAY_OIDC_REFS/);
  });

  it('rejects repositories without an audience', () => {
    expect(load({ SLIPWAY_OIDC_REPOSITORIES: REPOSITORY })).toThrow(/SLIPWAY_OIDC_AUDIENCE/);
  });

  it.each(['SLIPWAY_OIDC_ISSUER', 'SLIPWAY_OIDC_JWKS_URL'])(
    'rejects %s without an audience',
    (name) => {
      const env = { [name]: 'https://github.example.com/_services/token' };
      expect(load(env)).toThrow(ConfigError);
      expect(load(env)).toThrow(new RegExp(`SLIPWAY_OIDC_AUDIENCE: must be set when ${name} is`));
    },
  );

  it('is off without an audience', () => {
    expect(load({})().oidc).toBeUndefined();
  });
});
