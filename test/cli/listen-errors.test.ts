import { describe, expect, it } from 'vitest';
import { ensureBuilt, runCli, startApiProcess } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

/** Runs `slipway api` with `env` on the port of another API process, which it cannot take. */
async function runOnTakenPort(env: Record<string, string>) {
  await ensureBuilt();
  const first = await startApiProcess({ SLIPWAY_DATA_DIR: makeTempDir() });
  try {
    const port = new URL(first.url).port;
    const result = await runCli(['api'], {
      SLIPWAY_DATA_DIR: makeTempDir(),
      API_PORT: port,
      LOG_LEVEL: 'warn',
      ...env,
    });
    return { ...result, port };
  } finally {
    await first.stop();
  }
}

describe('slipway api listen errors', () => {
  it('names API_PORT when the port is taken', { timeout: 90_000 }, async () => {
    const second = await runOnTakenPort({});
    expect(second.code).toBe(2);
    expect(second.stderr).toContain(
      `slipway: configuration: API_PORT: 127.0.0.1:${second.port} is already in use`,
    );
  });

  it('ends a cluster whose processes cannot listen', { timeout: 90_000 }, async () => {
    // Each process would fail again, so the primary exits rather than restarting them.
    const cluster = await runOnTakenPort({ API_WORKERS: '2' });
    expect(cluster.code).toBe(2);
    expect(cluster.stderr).toContain(`API_PORT: 127.0.0.1:${cluster.port} is already in use`);
    expect(cluster.stdout).toContain('API process failed to start; stopping the others');
  });

  it('names API_HOST when the address is not local', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    // 192.0.2.0/24 is reserved for documentation, so no host of ours has this address.
    const result = await runCli(['api'], {
      SLIPWAY_DATA_DIR: makeTempDir(),
      API_HOST: '192.0.2.10',
      API_PORT: '0',
      LOG_LEVEL: 'warn',
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('API_HOST: "192.0.2.10" is not an address of this host');
  });
});
