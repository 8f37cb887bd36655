import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHealthMonitor } from '../../src/health/monitor.js';
import { runHealthChecks } from '../../src/health/runner.js';
import { setStateVariable } from '../../src/store/state-variables.js';
import { nowIso } from '../../src/util/time.js';
import type { TestServer } from '../support/server.js';
import { auditRows, startHealthServer, stateVariable } from './helpers.js';

describe('state variables of removed checks', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startHealthServer(`
  - name: kept
    type: workers
    min_online: 0
`);
    await runHealthChecks(server.context);
    // What a check named old-check left behind after a run, before the file dropped it.
    await server.context.store.write(async (trx) => {
      await trx
        .insertInto('health_components')
        .values({
          name: 'old-check',
          status: 'unhealthy',
          failures: 1,
          successes: 0,
          memo: '{}',
          updated_at: nowIso(),
        })
        .execute();
      await setStateVariable(trx, 'HEALTH_OLD_CHECK', 'unhealthy');
      await setStateVariable(trx, 'HEALTH_MANUAL', 'set by a person');
    });
    const monitor = await startHealthMonitor(server.context);
    // stop() waits for the removal that start began.
    await monitor.stop();
  });

  afterAll(async () => {
    await server?.close();
  });

  it('deletes the variable of a removed check', async () => {
    expect(await stateVariable(server, 'HEALTH_OLD_CHECK')).toBeUndefined();
  });

  it('keeps configured and manual variables', async () => {
    expect((await stateVariable(server, 'HEALTH_KEPT'))?.value).toBe('healthy');
    expect((await stateVariable(server, 'HEALTH_STATUS'))?.value).toBe('healthy');
    expect((await stateVariable(server, 'HEALTH_MANUAL'))?.value).toBe('set by a person');
  });

  it('writes one audit row per removal', async () => {
    const rows = await auditRows(server, 'health_variable_removed');
    expect(rows).toHaveLength(1);
    expect(rows[0]!.actor).toBe('health-monitor');
    expect(rows[0]!.details.variable).toBe('HEALTH_OLD_CHECK');
    expect(rows[0]!.details.component).toBe('old-check');
    expect(rows[0]!.details.value).toBe('unhealthy');
  });

  it('hides the variable from GET /api/state', async () => {
    const response = await server.request('GET', '/api/state', { token: server.adminToken });
    expect(JSON.stringify(response.body)).not.toContain('HEALTH_OLD_CHECK');
    expect(JSON.stringify(response.body)).toContain('HEALTH_KEPT');
  });
});
