import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/database.js';
import { childEnv, CLI_PATH, ensureBuilt, runCli } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

describe('slipway health-monitor', () => {
  const dir = makeTempDir('slipway-health-cli-');
  const tcp = net.createServer((socket) => socket.end());
  let port = 0;

  beforeAll(async () => {
    await ensureBuilt();
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    port = (tcp.address() as AddressInfo).port;
    fs.writeFileSync(
      path.join(dir, 'slipway.yml'),
      `pipelines:
  deploy:
    steps: [{ run: echo deploy }]
health_checks:
  - name: neighbour
    type: tcp
    port: ${port}
    interval: 200ms
`,
    );
  }, 180_000);
  afterAll(async () => {
    await new Promise((resolve) => tcp.close(resolve));
  });

  it('run-task without checks names the file', async () => {
    const bare = makeTempDir('slipway-health-cli-bare-');
    const file = path.join(bare, 'slipway.yml');
    fs.writeFileSync(
      file,
      'pipelines:\n  deploy:\n    steps: [{ run: echo deploy }]\nhealth_checks: []\n',
    );
    const env = { SLIPWAY_DATA_DIR: bare, SLIPWAY_PIPELINES: file, LOG_LEVEL: 'silent' };
    const init = await runCli(['init-db'], env);
    expect(init.code, init.stderr).toBe(0);
    const result = await runCli(['run-task', 'health-checks'], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      `the pipeline file ${file} has an empty health_checks list, so there is no ` +
        'health-checks task; add checks to it, or remove it to get the default checks',
    );
    expect(result.stderr).not.toContain('unknown task');
  });

  it('runs checks until SIGTERM', async () => {
    const child = spawn(process.execPath, [CLI_PATH, 'health-monitor'], {
      env: childEnv({
        SLIPWAY_DATA_DIR: dir,
        SLIPWAY_PIPELINES: path.join(dir, 'slipway.yml'),
        LOG_LEVEL: 'info',
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const healthy = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no result in 20 s: ${stderr}`)), 20_000);
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes('"msg":"neighbour is healthy"')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await healthy;
    const store = await openStore(path.join(dir, 'state', 'orchestration.db'), { migrate: false });
    const results = () =>
      store.db
        .selectFrom('health_metrics')
        .selectAll()
        .where('component', '=', 'neighbour')
        .execute();
    // The check is due every 200 ms: wait for a few results, each from a later run.
    const deadline = Date.now() + 10_000;
    while ((await results()).length < 3 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stdout).toContain('"msg":"health monitor started"');
    expect(stdout).toContain('"msg":"health-monitor stopped"');

    try {
      const rows = await results();
      expect(rows.length).toBeGreaterThanOrEqual(3);
      expect(rows.every((row) => row.status === 'healthy')).toBe(true);
    } finally {
      await store.close();
    }
  });
});
