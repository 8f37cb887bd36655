/** Reads of health_metrics shared by the status endpoint and the Prometheus gauges. */
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

/**
 * Returns the latest recorded result (the highest id) of each component, or of the named
 * ones, ordered by id. A GROUP BY component would read every row, so the query steps from one
 * component to the next in health_metrics_component_id instead. It then looks up each
 * component's highest id in the same index: two index searches per component.
 */
export async function latestMetrics(db: Kysely<Database>, components?: string[]) {
  if (components?.length === 0) return [];
  let latest = db
    .withRecursive('components(name)', (cte) =>
      cte
        .selectFrom('health_metrics')
        .select((eb) => eb.fn.min<string | null>('component').as('name'))
        .unionAll((step) =>
          step
            .selectFrom('components as c')
            .select((eb) =>
              eb
                .selectFrom('health_metrics')
                .select((e) => e.fn.min('component').as('next'))
                .whereRef('component', '>', 'c.name')
                .as('name'),
            )
            .where('c.name', 'is not', null),
        ),
    )
    .selectFrom('components as c')
    .innerJoin('health_metrics as m', (join) =>
      join.on((eb) =>
        eb(
          'm.id',
          '=',
          eb
            .selectFrom('health_metrics as h')
            .select((e) => e.fn.max('h.id').as('id'))
            .whereRef('h.component', '=', 'c.name'),
        ),
      ),
    )
    .selectAll('m');
  if (components !== undefined) latest = latest.where('c.name', 'in', components);
  return latest.orderBy('m.id').execute();
}
