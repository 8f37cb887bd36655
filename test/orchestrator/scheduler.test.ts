import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/database.js';
import { CLI_PATH, childEnv, ensureBuilt, runCli } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

interface Run {
  task: string;
  holder: string;
  startedAt: number;
}

function startOrchestrator(env: Record<string, string>) {
  const child = spawn(process.execPath, [CLI_PATH, 'orchestrator'], {
    env: childEnv({ LOG_LEVEL: 'info', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  return { child, stdout: () => stdout };
}

async function waitForLine(read: () => string, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!read().includes(text)) {
    if (Date.now() > deadline) throw new Error(`no "${text}" in ${timeoutMs} ms: ${read()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

function parseRuns(stdout: string): Run[] {
  return stdout
    .split('\n')
    .filter((line) => line.includes('"scheduled task finished"'))
    .map(
      (line) =>
        JSON.parse(line) as { task: string; holder: string; time: string; durationMs: number },
    )
    .map((entry) => ({
      task: entry.task,
      holder: entry.holder,
      startedAt: Date.parse(entry.time) - entry.durationMs,
    }));
}

describe('scheduled tasks in two orchestrator processes', () => {
  const dir = makeTempDir();
  const env = {
    SLIPWAY_DATA_DIR: dir,
    ORCHESTRATION_INTERVAL: '2',
    CLEANUP_INTERVAL: '3',
    BACKUP_INTERVAL: '0',
  };
  const processes: ReturnType<typeof startOrchestrator>[] = [];

  beforeAll(async () => {
    await ensureBuilt();
    const init = await runCli(['init-db'], env);
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(async () => {
    for (const running of processes) await stop(running.child);
  });

  it('runs each task once per interval', async () => {
    processes.push(startOrchestrator(env), startOrchestrator(env));
    for (const running of processes) {
      await waitForLine(running.stdout, 'scheduler started', 30_000);
    }
    const windowStart = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 12_000));
    const windowEnd = Date.now();
    for (const running of processes) await stop(running.child);

    const runs = processes.flatMap((running) => parseRuns(running.stdout()));
    for (const [task, interval] of [
      ['sweep', 2000],
      ['cleanup', 3000],
    ] as const) {
      const starts = runs
        .filter(
          (run) => run.task === task && run.startedAt >= windowStart && run.startedAt <= windowEnd,
        )
        .map((run) => run.startedAt)
        .sort((a, b) => a - b);
      const expected = (windowEnd - windowStart) / interval;
      expect(starts.length, `${task} runs`).toBeGreaterThanOrEqual(Math.floor(expected) - 1);
      expect(starts.length, `${task} runs`).toBeLessThanOrEqual(Math.ceil(expected) + 1);
      const gaps = starts.slice(1).map((start, index) => start - starts[index]!);
      expect(Math.min(...gaps), `${task} shortest gap`).toBeGreaterThanOrEqual(interval * 0.9 - 50);
    }
  });

  it('run-task runs a task at once and reports a held lock', async () => {
    // At level info the log goes to stderr, so stdout is only the summary.
    const done = await runCli(['run-task', 'sweep'], { ...env, LOG_LEVEL: 'info' });
    expect(done.code, done.stderr).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ task: 'sweep', leasesRecovered: 0 });
    expect(done.stderr).toContain('"level":30');

    const store = await openStore(`${dir}/state/orchestration.db`);
    await store.write((trx) =>
      trx
        .updateTable('scheduler_locks')
        .set({ holder: 'elsewhere:1:abc', expires_at: new Date(Date.now() + 60_000).toISOString() })
        .where('name', '=', 'cleanup')
        .execute(),
    );
    await store.close();
    const held = await runCli(['run-task', 'cleanup'], { ...env, LOG_LEVEL: 'silent' });
    expect(held.code).toBe(1);
    expect(held.stderr).toContain('task cleanup not started: running in elsewhere:1:abc');

    const unknown = await runCli(['run-task', 'nothing'], { ...env, LOG_LEVEL: 'silent' });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(
      'unknown task "nothing"; tasks: sweep, cleanup, backup, health-checks',
    );
  });
});
