/**
 * Many clients following the log of one running task, on a `slipway serve` whose in-process
 * worker renews its lease over the same API. Each append wakes every follower, and the
 * worker's heartbeats must still get through before the short lease runs out.
 */
import http from 'node:http';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { callServe, startServe, stopServe, type ServeProcess } from '../support/serve.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_many-followers-admin-token-000000000';
const FOLLOWERS = 200;
const LINES = 400;
/** The worker heartbeats every third of the lease, so a heartbeat may be 6 s late at most. */
const LEASE_SECONDS = 9;

/** Reads a followed log to its end and resolves with its text. */
function follow(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      response.on('error', reject);
    });
    request.on('error', reject);
  });
}

describe('many log followers', { timeout: 90_000 }, () => {
  let dataDir: string;
  let serve: ServeProcess;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-many-followers-');
    const pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: local
    steps:
      - name: print
        run: 'i=0; while [ $i -lt ${LINES} ]; do echo "line $i of a build log"; i=$((i+1)); sleep 0.02; done'
`);
    serve = await startServe({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_LEASE_SECONDS: String(LEASE_SECONDS),
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      API_RATE_LIMIT: '0',
    });
  });

  afterAll(async () => {
    await stopServe(serve);
  });

  it('keeps the lease and streams every line', async () => {
    const triggered = await callServe(serve, ADMIN_TOKEN, 'POST', '/api/trigger/ci', {
      commit: 'abcdef1',
    });
    expect(triggered.status).toBe(201);
    const id = triggered.body.job_id as string;

    const logs = await Promise.all(
      Array.from({ length: FOLLOWERS }, () =>
        follow(`${serve.url}/api/job/${id}/logs?follow=true`),
      ),
    );

    const job = (await callServe(serve, ADMIN_TOKEN, 'GET', `/api/job/${id}`)).body;
    expect(job.status, serve.output()).toBe('success');
    expect(job.tasks[0].attempt).toBe(1);
    const db = new Database(path.join(dataDir, 'state', 'orchestration.db'), { readonly: true });
    const expired = db
      .prepare("SELECT count(*) AS count FROM audit_log WHERE action = 'task_lease_expired'")
      .get() as { count: number };
    db.close();
    expect(expired.count).toBe(0);
    const expected = Array.from({ length: LINES }, (_, line) => `line ${line} of a build log`);
    for (const text of logs) {
      const lines = text.split('\n').filter((line) => line.startsWith('line '));
      expect(lines).toEqual(expected);
    }
  });
});
