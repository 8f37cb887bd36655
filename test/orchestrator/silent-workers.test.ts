import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import { markSilentWorkersOffline } from '../../src/orchestrator/silent-workers.js';
import type { TestServer } from '../support/server.js';
import { auditRows, startHealthServer } from '../health/helpers.js';

const audit = { actor: 'orchestrator' };

describe('workers that stopped without saying so', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    server = await startHealthServer(`
  - name: workers
    type: workers
    stale_after: 60s
`);
    agent = await server.token('agent');
  });
  afterAll(async () => {
    await server.close();
  });

  const register = async (name: string) => {
    const reply = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: { name, hostname: 'build-1', executors: ['local'], capacity: 1 },
    });
    expect(reply.status, reply.text).toBe(200);
  };

  /** Moves the worker's last heartbeat `minutes` into the past, as if it was killed then. */
  const silence = async (id: string, minutes: number) => {
    const at = new Date(Date.now() - minutes * 60_000).toISOString();
    await server.context.store.write((trx) =>
      trx.updateTable('workers').set({ last_heartbeat_at: at }).where('id', '=', id).execute(),
    );
  };

  const workersCheck = async () =>
    (await runHealthChecks(server.context, { force: true, names: ['workers'] }))[0]!;

  it('marks a long silent worker offline', async () => {
    await register('killed');
    await register('alive');
    await silence('killed', 5);
    // Five minutes makes it stale, but not yet silent long enough to mark.
    expect((await workersCheck()).status).toBe('degraded');
    expect(await markSilentWorkersOffline(server.context, audit)).toEqual([]);

    await silence('killed', 11);
    const marked = await markSilentWorkersOffline(server.context, audit);
    expect(marked).toEqual([expect.objectContaining({ id: 'killed', hostname: 'build-1' })]);
    const rows = await auditRows(server, 'worker_marked_offline');
    expect(rows).toHaveLength(1);
    expect(rows[0]!.details).toMatchObject({ worker_id: 'killed', hostname: 'build-1' });
    expect((await workersCheck()).status).toBe('healthy');
    // Nothing is left to mark on the next pass.
    expect(await markSilentWorkersOffline(server.context, audit)).toEqual([]);
  });

  it('lets a worker that was only cut off register again', async () => {
    const claim = await server.request('POST', '/api/agent/workers/killed/claim', {
      token: agent,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(claim.status).toBe(409);
    await register('killed');
    const again = await server.request('POST', '/api/agent/workers/killed/claim', {
      token: agent,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(again.status, again.text).toBe(200);
  });
});
