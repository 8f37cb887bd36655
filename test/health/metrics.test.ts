/** latestMetrics: the newest result of each health check, read without a scan of the table. */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { latestMetrics } from '../../src/health/metrics.js';
import { openStore, type Store } from '../../src/store/database.js';
import { plansOf } from '../support/plan.js';
import { makeTempDir } from '../support/server.js';

describe('latest health metrics', () => {
  let store: Store;

  beforeAll(async () => {
    store = await openStore(path.join(makeTempDir(), 'metrics.db'));
  });
  afterAll(async () => {
    await store.close();
  });

  const insertMetric = (component: string, recordedAt: string) =>
    store.write(async (trx) => {
      const row = await trx
        .insertInto('health_metrics')
        .values({
          component,
          status: 'healthy',
          latency_ms: 1,
          details: '{}',
          recorded_at: recordedAt,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      return row.id;
    });

  it('returns nothing for an empty table', async () => {
    expect(await latestMetrics(store.db)).toEqual([]);
    expect(await latestMetrics(store.db, ['api'])).toEqual([]);
  });

  it('returns the highest id of each component', async () => {
    await insertMetric('docker', '2026-01-01T00:00:00.000Z');
    await insertMetric('api', '2026-01-01T00:00:01.000Z');
    const api = await insertMetric('api', '2026-01-01T00:00:02.000Z');
    await insertMetric('tailscale', '2026-01-01T00:00:03.000Z');
    // The latest result is the highest id, even where an earlier id has a later time.
    const tailscale = await insertMetric('tailscale', '2025-12-31T00:00:00.000Z');
    const docker = await insertMetric('docker', '2026-01-01T00:00:04.000Z');

    const all = await latestMetrics(store.db);
    expect(all.map((row) => [row.component, row.id])).toEqual([
      ['api', api],
      ['tailscale', tailscale],
      ['docker', docker],
    ]);
    expect(all[1]).toEqual({
      id: tailscale,
      component: 'tailscale',
      status: 'healthy',
      latency_ms: 1,
      details: '{}',
      recorded_at: '2025-12-31T00:00:00.000Z',
    });

    const named = await latestMetrics(store.db, ['docker', 'api', 'missing']);
    expect(named.map((row) => row.id)).toEqual([api, docker]);
    expect(await latestMetrics(store.db, [])).toEqual([]);
  });

  it('seeks each component in an index', async () => {
    const plans = await plansOf(store.path, async (db) => {
      await latestMetrics(db);
      await latestMetrics(db, ['api']);
    });
    expect(plans).toHaveLength(2);
    for (const plan of plans) {
      expect(plan).not.toMatch(/SCAN health_metrics/);
      expect(plan).toMatch(
        /SEARCH health_metrics USING COVERING INDEX health_metrics_component_id \(component>\?\)/,
      );
      expect(plan).toMatch(
        /SEARCH h USING COVERING INDEX health_metrics_component_id \(component=\?\)/,
      );
    }
  });
});
