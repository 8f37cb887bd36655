/** The container sweep on a host without a Docker engine. */
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppContext } from '../../src/app/context.js';
import type { ExecutorChoice } from '../../src/config/env.js';
import { removeOrphanContainers } from '../../src/orchestrator/orphans.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

/** Runs the container sweep with the executor setting and returns the levels it logged. */
async function sweepLevels(server: TestServer, executor: ExecutorChoice): Promise<number[]> {
  const levels: number[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      levels.push((JSON.parse(chunk.toString()) as { level: number }).level);
      callback();
    },
  });
  const config = server.context.config;
  const context: AppContext = {
    ...server.context,
    logger: pino({ level: 'debug' }, sink),
    config: {
      ...config,
      // A socket path where no engine listens, as on a host without Docker.
      worker: { ...config.worker, executor, dockerHost: `unix://${missingSocket}` },
    },
  };
  const result = await removeOrphanContainers(context, { actor: 'orchestrator' });
  expect(result.removed).toBe(0);
  expect(result.error).toContain('ENOENT');
  return levels;
}

let missingSocket: string;

describe('container sweep without Docker', () => {
  let server: TestServer;

  beforeAll(async () => {
    missingSocket = path.join(makeTempDir(), 'docker.sock');
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('logs at debug level for local steps', async () => {
    expect(await sweepLevels(server, 'local')).toEqual([pino.levels.values.debug]);
  });

  it('warns when steps may need Docker', async () => {
    expect(await sweepLevels(server, 'docker')).toEqual([pino.levels.values.warn]);
    expect(await sweepLevels(server, 'auto')).toEqual([pino.levels.values.warn]);
  });
});
