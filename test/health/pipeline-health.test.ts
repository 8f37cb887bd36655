import { describe, expect, it } from 'vitest';
import { parsePipelineFile, PipelineFileError } from '../../src/pipeline/load.js';

const BASE = `pipelines:
  deploy:
    steps:
      - run: echo deploy
recovery:
  restart-web:
    action: restart_container
    container: web
health_checks:
`;

function problems(checks: string) {
  try {
    parsePipelineFile(BASE + checks, 'slipway.yml');
  } catch (error) {
    if (error instanceof PipelineFileError) return error.problems;
    throw error;
  }
  throw new Error('the file was accepted');
}

describe('health_checks in the pipeline file', () => {
  it('resolves every check type with defaults', () => {
    const file = parsePipelineFile(
      `${BASE}  - name: web
    type: http
    url: http://127.0.0.1:8080/health
    expect_status: [200, 204]
    interval: 30s
    timeout: 5s
    thresholds: { down: 3, up: 2 }
    heal:
      action: restart_container
      container: web
      cooldown: 5m
      max_per_hour: 4
  - name: redis
    type: tcp
    port: 6379
  - name: database
    type: database
    disk_warn: 2GiB
    disk_fail: 500MB
  - name: tailnet
    type: tailscale
  - name: containers
    type: docker
    containers: [web, /redis]
    max_restarts: 5
    heal: { action: recovery_procedure, procedure: restart-web }
  - name: workers
    type: workers
    heal: { action: trigger_job, job_type: deploy, commit_from_state: LAST_DEPLOYED_COMMIT }
`,
      'slipway.yml',
    );
    const [web, redis, database, tailnet, containers, workers] = file.healthChecks;
    expect(web).toMatchObject({
      type: 'http',
      intervalMs: 30_000,
      timeoutMs: 5_000,
      thresholds: { down: 3, up: 2 },
      settings: { method: 'GET', expectStatus: [200, 204], expectBody: undefined },
      heal: { action: 'restart_container', after: 3, cooldownMs: 300_000, maxPerHour: 4 },
    });
    expect(redis).toMatchObject({
      settings: { host: '127.0.0.1', port: 6379 },
      intervalMs: undefined,
      timeoutMs: 10_000,
      thresholds: { down: 1, up: 1 },
    });
    expect(database?.settings).toMatchObject({
      query: 'SELECT 1',
      integrityIntervalMs: 3_600_000,
      diskWarn: { bytes: 2 * 1024 ** 3 },
      diskFail: { bytes: 500_000_000 },
      walWarnBytes: 256 * 1024 ** 2,
    });
    expect(tailnet?.settings).toEqual({ socket: undefined });
    expect(containers?.settings).toEqual({
      socket: undefined,
      containers: ['web', 'redis'],
      maxRestarts: 5,
    });
    expect(containers?.heal).toMatchObject({ action: 'recovery_procedure', cooldownMs: 600_000 });
    expect(workers?.settings).toEqual({ staleAfterMs: 90_000, minOnline: 1 });
    expect(workers?.heal).toMatchObject({
      action: 'trigger_job',
      jobType: 'deploy',
      commitFromState: 'LAST_DEPLOYED_COMMIT',
      maxPerHour: 3,
    });
  });

  it('names file, line and field of a missing setting', () => {
    expect(problems(`  - name: redis\n    type: tcp\n    host: localhost\n`)).toEqual([
      {
        file: 'slipway.yml',
        line: 10,
        field: 'health_checks.0.port',
        message: 'is required for a tcp check',
      },
    ]);
  });

  it('rejects an empty heal param name', () => {
    const [problem] = problems(
      `  - name: w\n    type: workers\n    heal: { action: trigger_job, job_type: deploy, params: { '': x } }\n`,
    );
    expect(problem).toMatchObject({ field: 'health_checks.0.heal.params' });
    expect(problem?.message).toContain('a param name must be 1 to 100 characters');
  });

  it('requires a heal commit with a repository', () => {
    const check = (heal: string) => `  - name: w\n    type: workers\n    heal: ${heal}\n`;
    const repository = 'repository: /srv/git/app.git\n';
    const noCommit = check('{ action: trigger_job, job_type: deploy }');
    expect(problems(noCommit + repository)).toEqual([
      {
        file: 'slipway.yml',
        line: 12,
        field: 'health_checks.0.heal',
        message:
          "triggers a job with no commit, whose tasks check nothing out of the file's " +
          'repository and start in an empty workspace; set commit or commit_from_state',
      },
    ]);

    const fromState = check(
      '{ action: trigger_job, job_type: deploy, commit_from_state: LAST_DEPLOYED_COMMIT }',
    );
    const withCommit = check('{ action: trigger_job, job_type: deploy, commit: abcdef1 }');
    for (const checks of [fromState, withCommit]) {
      const file = parsePipelineFile(BASE + checks + repository, 'slipway.yml');
      expect(file.healthChecks[0]?.heal?.action).toBe('trigger_job');
    }
    // Without a repository a job checks nothing out, so it needs no commit.
    const bare = parsePipelineFile(BASE + noCommit, 'slipway.yml');
    expect(bare.healthChecks[0]?.heal?.commit).toBeUndefined();
  });

  it('checks heal beside a schema error', () => {
    const found = problems(`  - name: a
    type: tcp
    heal: { action: recovery_procedure, procedure: nope }
  - name: b
    type: workers
    heal: { action: recovery_procedure, procedure: nope, cooldown: soon }
  - name: c
    type: workers
    heal: { action: trigger_job, job_type: Deploy, commit: abcdef1 }
  - name: d
    type: workers
    heal: { action: trigger_job, job_type: deploy, commit: xyz }
repository: /srv/git/app.git
`);
    expect(found.map((problem) => [problem.line, problem.field, problem.message])).toEqual([
      [10, 'health_checks.0.port', 'is required for a tcp check'],
      [12, 'health_checks.0.heal.procedure', 'unknown recovery procedure "nope"'],
      [
        15,
        'health_checks.1.heal.cooldown',
        'must be a duration such as 90 (seconds), 90s, 20m or 1h30m, got "soon"',
      ],
      [15, 'health_checks.1.heal.procedure', 'unknown recovery procedure "nope"'],
      // A field that failed the schema is not reported as missing as well.
      [
        18,
        'health_checks.2.heal.job_type',
        'must match the pattern ^[a-z][a-z0-9-]{0,62}$, got "Deploy"',
      ],
      [21, 'health_checks.3.heal.commit', 'must match the pattern ^[0-9a-fA-F]{7,64}$, got "xyz"'],
    ]);
  });

  it('resolves the queue check', () => {
    const file = parsePipelineFile(
      `${BASE}  - name: queue\n    type: queue\n  - name: late\n    type: queue\n    max_wait: 90s\n`,
      'slipway.yml',
    );
    expect(file.healthChecks.map((check) => check.settings)).toEqual([
      { maxWaitMs: 15 * 60_000 },
      { maxWaitMs: 90_000 },
    ]);
    const [problem] = problems(`  - name: queue\n    type: queue\n    max_wait: soon\n`);
    expect(problem).toMatchObject({ line: 12, field: 'health_checks.0.max_wait' });
  });

  it('rejects a field of another check type', () => {
    const [problem] = problems(`  - name: web\n    type: tcp\n    port: 80\n    url: http://x\n`);
    expect(problem).toMatchObject({
      line: 13,
      field: 'health_checks.0.url',
      message: 'is not a setting of a tcp check; its settings: host, port, degraded_latency',
    });
  });

  it('rejects invalid values with the rule', () => {
    const [threshold] = problems(`  - name: web\n    type: workers\n    thresholds: { down: 0 }\n`);
    expect(threshold).toMatchObject({ line: 12, field: 'health_checks.0.thresholds.down' });
    expect(threshold?.message).toMatch(/greater or equal to 1/);

    const found = problems(`  - name: web
    type: http
    url: ftp://example
  - name: db
    type: database
    disk_warn: lots
  - name: db2
    type: database
    disk_warn: 5%
    disk_fail: 20%
  - name: status
    type: workers
  - name: web
    type: workers
  - name: head
    type: http
    url: http://127.0.0.1:8080/
    method: HEAD
    expect_body: ok
`);
    const byField = Object.fromEntries(found.map((problem) => [problem.field, problem]));
    expect(byField['health_checks.0.url']?.message).toBe(
      'must be an absolute http:// or https:// URL',
    );
    expect(byField['health_checks.1.disk_warn']?.message).toBe(
      'must be bytes, a size such as 500MB or 2GiB, or a percentage such as 10%',
    );
    expect(byField['health_checks.2.disk_fail']?.message).toBe('must not be larger than disk_warn');
    expect(byField['health_checks.3.name']?.message).toMatch(/^is reserved/);
    expect(byField['health_checks.4.name']?.message).toBe('duplicate check name "web"');
    expect(byField['health_checks.5.expect_body']?.message).toBe(
      'cannot be checked with method HEAD, which has no body',
    );
  });

  it('rejects a percentage as wal_warn', () => {
    const [percent] = problems(`  - name: db\n    type: database\n    wal_warn: 10%\n`);
    expect(percent).toMatchObject({
      field: 'health_checks.0.wal_warn',
      message: 'must be bytes or a size such as 500MB or 2GiB',
    });
  });

  it('rejects an empty container list', () => {
    const [empty] = problems(`  - name: apps\n    type: docker\n    containers: []\n`);
    expect(empty).toMatchObject({ field: 'health_checks.0.containers' });
    expect(empty?.message).toMatch(/array length to be greater or equal to 1/);
  });

  it('rejects an unknown heal action', () => {
    const found = problems(`  - name: d\n    type: workers\n    heal: { action: reboot }\n`);
    expect(found.map((problem) => [problem.line, problem.field, problem.message])).toEqual([
      [
        12,
        'health_checks.0.heal.action',
        'must be one of restart_container, trigger_job, recovery_procedure, got "reboot"',
      ],
    ]);
  });

  it('checks what a heal action names', () => {
    const found = problems(`  - name: a
    type: workers
    heal: { action: restart_container }
  - name: b
    type: workers
    heal: { action: trigger_job, job_type: nope }
  - name: c
    type: workers
    heal: { action: recovery_procedure, procedure: nope }
  - name: e
    type: workers
    heal: { action: trigger_job, job_type: deploy, commit: abcdef1, commit_from_state: X }
  - name: f
    type: workers
    heal: { action: restart_container, container: web, branch: main }
`);
    expect(found.map((problem) => [problem.line, problem.field, problem.message])).toEqual([
      [12, 'health_checks.0.heal.container', 'is required for the restart_container action'],
      [15, 'health_checks.1.heal.job_type', 'unknown job type "nope"'],
      [18, 'health_checks.2.heal.procedure', 'unknown recovery procedure "nope"'],
      [
        21,
        'health_checks.3.heal.commit_from_state',
        'give either commit or commit_from_state, not both',
      ],
      [24, 'health_checks.4.heal.branch', 'is not used by the restart_container action; remove it'],
    ]);
  });
});
