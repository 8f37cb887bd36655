/**
 * Compares .env.example, which the README and docs/setup.md present as the list of every
 * setting of the compose stack, with the variables that loadConfig reads.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import { REPO_ROOT } from '../support/compose.js';

/**
 * Variables that an operator of the stack does not set in .env. The services reach the engine
 * through the socket that DOCKER_SOCKET mounts, so DOCKER_HOST stays unset. Only the
 * `slipway trigger` client reads SLIPWAY_TOKEN.
 */
const NOT_STACK_SETTINGS = ['DOCKER_HOST', 'SLIPWAY_TOKEN'];

/** Returns the names of the variables that loadConfig reads from its environment. */
function variablesReadByConfig(): string[] {
  const read = new Set<string>();
  const env = new Proxy({} as Record<string, string | undefined>, {
    get(_target, name) {
      if (typeof name === 'string') read.add(name);
      return undefined;
    },
  });
  loadConfig(env, REPO_ROOT);
  return [...read];
}

/** Returns the variables that docker-compose.yml or the Dockerfile set for the services. */
function variablesSetByStack(): Set<string> {
  const compose = parse(fs.readFileSync(path.join(REPO_ROOT, 'docker-compose.yml'), 'utf8'), {
    merge: true,
  }) as { services: Record<string, { environment?: Record<string, unknown> }> };
  const names = new Set<string>();
  for (const service of Object.values(compose.services)) {
    for (const name of Object.keys(service.environment ?? {})) names.add(name);
  }
  const dockerfile = fs.readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
  for (const match of dockerfile.matchAll(/^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]*)=/gm)) {
    names.add(match[1]!);
  }
  return names;
}

describe('.env.example', () => {
  it('lists every stack setting', () => {
    const example = fs.readFileSync(path.join(REPO_ROOT, '.env.example'), 'utf8');
    const listed = new Set([...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    const setByStack = variablesSetByStack();
    const read = variablesReadByConfig();
    expect(read.length).toBeGreaterThan(40);
    const missing = read.filter(
      (name) => !listed.has(name) && !setByStack.has(name) && !NOT_STACK_SETTINGS.includes(name),
    );
    expect(missing).toEqual([]);
  });
});
