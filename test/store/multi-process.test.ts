/**
 * Three processes writing to one SQLite file at once: two `slipway api` processes on
 * different ports and a loop of `slipway token create` runs. SQLite allows one writer at a
 * time, so this checks that the busy timeout and BEGIN IMMEDIATE keep SQLITE_BUSY and 5xx
 * away from clients, and that no job is lost or written twice.
 */
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli, startApiProcess, type ApiProcess } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_multi-process-admin-token-000000001';
const MIN_TRIGGERS = 200;
/** Stops the stream even if the CLI loop hangs, so a hang fails on the CLI's exit codes. */
const MAX_TRIGGERS = 20_000;
const CLI_RUNS = 3;
const CONCURRENCY = 8;
const RACERS = 20;

interface Outcome {
  status: number;
  body: string;
}

async function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Outcome> {
  const response = await fetch(`${url}/api/trigger/recovery`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      'content-type': 'application/json',
      ...headers,
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.text() };
}

describe('three processes writing at once', () => {
  let dataDir: string;
  const apis: ApiProcess[] = [];

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-multi-');
    // Both start on an empty data directory at the same moment: migrations and the admin
    // token race too.
    const env = { SLIPWAY_DATA_DIR: dataDir, SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN };
    const started = await Promise.allSettled([startApiProcess(env), startApiProcess(env)]);
    for (const result of started) if (result.status === 'fulfilled') apis.push(result.value);
    // afterAll stops the one that started when the other failed.
    const failed = started.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  });
  afterAll(async () => {
    await Promise.all(apis.map((api) => api.stop()));
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('both APIs started on one fresh database', () => {
    expect(apis).toHaveLength(2);
    expect(apis[0]!.url).not.toBe(apis[1]!.url);
  });

  it('concurrent writers lose and double nothing', async () => {
    // Both APIs take a steady stream of triggers until the CLI loop has finished, so every
    // CLI write lands in the middle of the stream.
    const cliResults: Array<{ code: number | null; stderr: string }> = [];
    let cliDone = false;
    const cliLoop = (async () => {
      try {
        for (let index = 0; index < CLI_RUNS; index += 1) {
          const result = await runCli(
            ['token', 'create', '--name', `cli-${index}`, '--role', 'read'],
            { SLIPWAY_DATA_DIR: dataDir },
            60_000,
          );
          cliResults.push(result);
        }
      } finally {
        cliDone = true;
      }
    })();

    const outcomes: Outcome[] = [];
    const lanes = Array.from({ length: CONCURRENCY }, async (_, lane) => {
      while ((!cliDone || outcomes.length < MIN_TRIGGERS) && outcomes.length < MAX_TRIGGERS) {
        const index = outcomes.length;
        const api = apis[(index + lane) % 2]!;
        outcomes.push(await post(api.url, { commit: 'abc1234', params: { index, lane } }));
      }
    });
    await Promise.all([...lanes, cliLoop]);
    expect(cliResults).toHaveLength(CLI_RUNS);

    const failures = outcomes.filter((outcome) => outcome.status !== 201);
    expect(failures).toEqual([]);
    for (const outcome of outcomes) expect(outcome.body).not.toMatch(/SQLITE|busy|locked/i);
    expect(cliResults.map((result) => result.code)).toEqual(cliResults.map(() => 0));
    for (const result of cliResults) expect(result.stderr).not.toMatch(/SQLITE|busy|locked/i);

    const ids = outcomes.map((outcome) => (JSON.parse(outcome.body) as { job_id: string }).job_id);
    expect(new Set(ids).size).toBe(outcomes.length);

    const sqlite = new BetterSqlite3(path.join(dataDir, 'state', 'orchestration.db'), {
      readonly: true,
    });
    try {
      const stored = sqlite.prepare('SELECT id FROM jobs').all() as Array<{ id: string }>;
      expect(stored).toHaveLength(outcomes.length);
      expect(new Set(stored.map((row) => row.id))).toEqual(new Set(ids));
      const audit = sqlite
        .prepare("SELECT count(*) AS n FROM audit_log WHERE action = 'job_triggered'")
        .get() as { n: number };
      expect(audit.n).toBe(outcomes.length);
      const tokens = sqlite
        .prepare("SELECT count(*) AS n FROM api_tokens WHERE name LIKE 'cli-%'")
        .get() as { n: number };
      expect(tokens.n).toBe(cliResults.length);
      const admins = sqlite
        .prepare("SELECT count(*) AS n FROM api_tokens WHERE role = 'admin'")
        .get() as { n: number };
      expect(admins.n).toBe(1);
    } finally {
      sqlite.close();
    }
  }, 120_000);

  it(`${RACERS} racing retries across both processes create one job`, async () => {
    const body = { commit: 'def5678', github_run_id: '424242' };
    const outcomes = await Promise.all(
      Array.from({ length: RACERS }, (_, index) =>
        post(apis[index % 2]!.url, body, { 'idempotency-key': 'cross-process-key' }),
      ),
    );
    const statuses = outcomes.map((outcome) => outcome.status);
    expect(statuses.filter((status) => status === 201)).toHaveLength(1);
    expect(statuses.filter((status) => status === 200)).toHaveLength(RACERS - 1);
    const ids = new Set(outcomes.map((outcome) => JSON.parse(outcome.body).job_id as string));
    expect(ids.size).toBe(1);

    const sqlite = new BetterSqlite3(path.join(dataDir, 'state', 'orchestration.db'), {
      readonly: true,
    });
    try {
      const rows = sqlite
        .prepare("SELECT id FROM jobs WHERE idempotency_key = 'cross-process-key'")
        .all();
      expect(rows).toHaveLength(1);
    } finally {
      sqlite.close();
    }
  });
});
