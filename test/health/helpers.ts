/** Starts the real API with a pipeline file of health checks, for health monitor tests. */
import fs from 'node:fs';
import path from 'node:path';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const PIPELINES = `
pipelines:
  deploy:
    executor: local
    steps:
      - run: echo deploy
`;

/** `checks` is the YAML of the health_checks list (and any extra sections after it). */
export async function startHealthServer(
  checks: string,
  env: Record<string, string> = {},
  dir = makeTempDir('slipway-health-'),
): Promise<TestServer> {
  const file = path.join(dir, 'slipway.yml');
  fs.writeFileSync(file, `${PIPELINES}\nhealth_checks:\n${checks}`);
  return startTestServer({ SLIPWAY_PIPELINES: file, SLIPWAY_DATA_DIR: dir, ...env });
}

export async function stateVariable(server: TestServer, name: string) {
  return server.context.store.db
    .selectFrom('state_variables')
    .selectAll()
    .where('name', '=', name)
    .executeTakeFirst();
}

export async function auditRows(server: TestServer, action: string) {
  const rows = await server.context.store.db
    .selectFrom('audit_log')
    .selectAll()
    .where('action', '=', action)
    .orderBy('id')
    .execute();
  // Details differ per action; tests read the fields they expect, as they do with bodies.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return rows.map((row) => ({ ...row, details: JSON.parse(row.details) as Record<string, any> }));
}
