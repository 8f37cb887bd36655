import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppContext } from '../../src/app/context.js';
import { probeDocker } from '../../src/health/checks/docker.js';
import {
  countRecentRestarts,
  RESTART_WINDOW_MS,
  type RestartHistory,
} from '../../src/health/checks/docker-restarts.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';

const HOUR = RESTART_WINDOW_MS;

describe('countRecentRestarts', () => {
  const now = 10 * HOUR;

  it('counts nothing on the first check', () => {
    const { restarts, history } = countRecentRestarts(undefined, 'c1', 4, now);
    expect(restarts).toBe(0);
    expect(history).toEqual({ id: 'c1', samples: [{ at: now, count: 4 }] });
  });

  it('counts restarts within the hour', () => {
    const previous = { id: 'c1', samples: [{ at: now - 2 * HOUR, count: 1 }] };
    expect(countRecentRestarts(previous, 'c1', 4, now).restarts).toBe(3);
  });

  it('forgets restarts older than an hour', () => {
    const previous: RestartHistory = {
      id: 'c1',
      samples: [
        { at: now - 5 * HOUR, count: 0 },
        { at: now - 3 * HOUR, count: 4 },
      ],
    };
    const { restarts, history } = countRecentRestarts(previous, 'c1', 4, now);
    expect(restarts).toBe(0);
    expect(history.samples).toEqual([{ at: now - 3 * HOUR, count: 4 }]);
  });

  it('keeps one sample per change of the count', () => {
    const previous = { id: 'c1', samples: [{ at: now - 60_000, count: 2 }] };
    expect(countRecentRestarts(previous, 'c1', 2, now).history.samples).toEqual([
      { at: now - 60_000, count: 2 },
    ]);
    expect(countRecentRestarts(previous, 'c1', 3, now).history.samples).toEqual([
      { at: now - 60_000, count: 2 },
      { at: now, count: 3 },
    ]);
  });

  it('starts again after the count fell', () => {
    const previous = { id: 'c1', samples: [{ at: now - 2 * HOUR, count: 7 }] };
    const { restarts, history } = countRecentRestarts(previous, 'c1', 2, now);
    expect(restarts).toBe(0);
    expect(history).toEqual({ id: 'c1', samples: [{ at: now, count: 2 }] });
  });

  it('starts again for a new container', () => {
    const previous = { id: 'old', samples: [{ at: now - 2 * HOUR, count: 7 }] };
    const { restarts, history } = countRecentRestarts(previous, 'new', 1, now);
    expect(restarts).toBe(0);
    expect(history).toEqual({ id: 'new', samples: [{ at: now, count: 1 }] });
  });
});

describe('docker check max_restarts', () => {
  const name = `slipway-health-${randomBytes(4).toString('hex')}-restarted`;
  const settings = { socket: undefined, containers: [name], maxRestarts: 2 };
  let docker: Docker;
  let containerId: string;

  const probe = (memo: Record<string, unknown>) =>
    probeDocker(settings, {
      app: {} as AppContext,
      signal: new AbortController().signal,
      memo,
    });

  beforeAll(async () => {
    docker = await requireDocker();
    // Exits 3 three times, so Docker restarts it three times, and then keeps running.
    const script =
      'n=$(cat /tmp/runs 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /tmp/runs; ' +
      'if [ $n -gt 3 ]; then exec sleep 3600; fi; exit 3';
    const container = await docker.createContainer({
      Image: TEST_IMAGE,
      name,
      Cmd: ['sh', '-c', script],
      HostConfig: { NetworkMode: 'none', RestartPolicy: { Name: 'on-failure' } },
    });
    containerId = container.id;
    await container.start();
    const deadline = Date.now() + 20_000;
    for (;;) {
      const info = await container.inspect();
      if (info.RestartCount === 3 && info.State.Status === 'running') break;
      if (Date.now() > deadline) throw new Error(`container ${name} did not restart 3 times`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, 30_000);

  afterAll(async () => {
    await docker
      ?.getContainer(name)
      .remove({ force: true })
      .catch(() => undefined);
  });

  it('ignores restarts older than an hour', async () => {
    const memo = {
      restart_history: {
        [name]: {
          id: containerId,
          samples: [
            { at: Date.now() - 5 * HOUR, count: 0 },
            { at: Date.now() - 3 * HOUR, count: 3 },
          ],
        },
      },
    };
    const result = await probe(memo);
    expect(result.status).toBe('healthy');
    const details = (result.details.containers as Record<string, Record<string, unknown>>)[name]!;
    expect(details.restart_count).toBe(3);
    expect(details.restarts_last_hour).toBe(0);
  });

  it('degrades on restarts within the hour', async () => {
    const memo = {
      restart_history: {
        [name]: { id: containerId, samples: [{ at: Date.now() - 2 * HOUR, count: 0 }] },
      },
    };
    const result = await probe(memo);
    expect(result.status).toBe('degraded');
    expect(result.reason).toBe(
      `container ${name} restarted 3 times in the last hour, above max_restarts of 2`,
    );
  });

  it('keeps the history for the next run', async () => {
    const memo: Record<string, unknown> = {};
    const first = await probe(memo);
    expect(first.status).toBe('healthy');
    const history = (memo.restart_history as Record<string, RestartHistory>)[name]!;
    expect(history.id).toBe(containerId);
    expect(history.samples.map((sample) => sample.count)).toEqual([3]);
    const second = await probe(memo);
    expect(second.status).toBe('healthy');
  });
});
