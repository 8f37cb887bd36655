/**
 * docker-compose.yml as compose resolves it (`config`), which parses the file and the env file
 * and needs no Docker engine.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { composeCommand, REPO_ROOT } from '../support/compose.js';
import { makeTempDir } from '../support/server.js';

const SECRETS = {
  SLIPWAY_ADMIN_TOKEN: 'slw_compose-config-admin-0000000000',
  SLIPWAY_AGENT_TOKEN: 'slw_compose-config-agent-0000000000',
  SLIPWAY_TOKEN: 'slw_compose-config-trigger-00000000',
  GITHUB_TOKEN: 'ghp_compose-config-github-token',
  GITHUB_WEBHOOK_SECRET: 'compose-config-webhook-secret',
};

interface ResolvedService {
  environment?: Record<string, string | null>;
}

/** Returns each service's environment after compose merged the env file and overrides. */
function resolvedEnvironments(): Record<string, Record<string, string | null>> {
  const dir = makeTempDir('slipway-compose-config-');
  const envFile = path.join(dir, '.env');
  const values = { ...SECRETS, DOCKER_GID: '999', SLIPWAY_ENV_FILE: envFile };
  const lines = Object.entries(values).map(([name, value]) => `${name}=${value}`);
  fs.writeFileSync(envFile, `${lines.join('\n')}\n`);
  const [program, prefix] = composeCommand();
  const args = [...prefix, '--env-file', envFile, '-f', 'docker-compose.yml', 'config'];
  const output = execFileSync(program, args, { cwd: REPO_ROOT, encoding: 'utf8' });
  const services = (parse(output) as { services: Record<string, ResolvedService> }).services;
  return Object.fromEntries(
    Object.entries(services).map(([name, service]) => [name, service.environment ?? {}]),
  );
}

describe('compose file secrets', () => {
  const environments = resolvedEnvironments();

  it('gives api every secret', () => {
    const api = environments.api!;
    for (const [name, value] of Object.entries(SECRETS)) expect(api[name]).toBe(value);
  });

  it('gives the worker only its agent token', () => {
    const worker = environments.worker!;
    expect(worker.SLIPWAY_AGENT_TOKEN).toBe(SECRETS.SLIPWAY_AGENT_TOKEN);
    for (const name of Object.keys(SECRETS)) {
      if (name !== 'SLIPWAY_AGENT_TOKEN') expect(worker[name], name).toBe('');
    }
  });

  it.each(['database-init', 'orchestrator', 'health-monitor'])('gives %s no secret', (service) => {
    const environment = environments[service]!;
    expect(environment).toBeDefined();
    for (const name of Object.keys(SECRETS)) expect(environment[name], name).toBe('');
  });
});
