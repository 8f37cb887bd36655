/** Reads of health_metrics shared by the status endpoint and the Prometheus gauges. */
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

/** Returns the latest recorded result of each component, or of the named ones. */
export async function latestMetrics(db: Kysely<Database>, components?: string[]) {
  if (components?.length === 0) return [];
  return db
    .selectFrom('health_metrics as m')
    .selectAll('m')
    .where('m.id', 'in', (eb) => {
      let latest = eb
        .selectFrom('health_metrics')
        .select((e) => e.fn.max('id').as('id'))
        .groupBy('component');
      if (components !== undefined) latest = latest.where('component', 'in', components);
      return latest;
    })
    .execute();
}
