/**
 * Kill events of the real Docker engine: a watch opened before the start receives a kill that
 * hundreds of other events followed, which the engine's list of recent events has lost.
 */
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engineKillSignals, KillWatch } from '../../src/execution/container-kills.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';

describe('container kill events', () => {
  let docker: Docker;
  const containers: Docker.Container[] = [];

  beforeAll(async () => {
    docker = await requireDocker();
  });

  afterAll(async () => {
    for (const container of containers) await container.remove({ force: true }).catch(() => {});
  });

  async function sleeper(): Promise<Docker.Container> {
    const container = await docker.createContainer({
      Image: TEST_IMAGE,
      Cmd: ['sleep', '300'],
      HostConfig: { NetworkMode: 'none' },
    });
    containers.push(container);
    return container;
  }

  it('keeps a kill after many events', async () => {
    const target = await sleeper();
    const watch = await KillWatch.start(docker, target.id, 5_000);
    try {
      await target.start();
      await target.kill({ signal: 'SIGKILL' });
      await target.wait();

      // 300 events of another container push the kill out of the engine's recent events.
      const other = await sleeper();
      await other.start();
      for (let index = 0; index < 300; index += 1) {
        await other.exec({ Cmd: ['true'] });
      }

      expect(await watch.signalsAfterExit(2_000)).toEqual([9]);
      expect(await engineKillSignals(docker, target.id, 5_000)).toEqual([]);
    } finally {
      watch.close();
    }
  });

  it('reports no kill for an exit of its own', async () => {
    const target = await docker.createContainer({ Image: TEST_IMAGE, Cmd: ['sh', '-c', 'exit 3'] });
    containers.push(target);
    const watch = await KillWatch.start(docker, target.id, 5_000);
    try {
      await target.start();
      await target.wait();
      expect(await watch.signalsAfterExit(2_000)).toEqual([]);
    } finally {
      watch.close();
    }
  });

  it('returns nothing without the exit event', async () => {
    const target = await sleeper();
    const watch = await KillWatch.start(docker, target.id, 5_000);
    watch.close();
    expect(await watch.signalsAfterExit(100)).toBeUndefined();
  });
});
