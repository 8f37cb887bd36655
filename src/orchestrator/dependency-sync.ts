/**
 * Writes the pipeline file's `needs:` to `workflow_dependencies` at start, so that the
 * table (which gating reads and operators query with SQL) matches the file in use.
 */
import os from 'node:os';
import type { Logger } from '../log.js';
import type { PipelineFile } from '../pipeline/types.js';
import { appendAudit } from '../store/audit.js';
import type { Store } from '../store/database.js';
import { nowIso } from '../util/time.js';

type Dependency = [workflow: string, dependsOn: string];

export interface DependencyChanges {
  added: Dependency[];
  /** Rows that a pipeline file wrote and the file in use no longer has. */
  removed: Dependency[];
  /**
   * Built-in defaults that a migration seeds on a new data directory (integration-tests needs
   * ci, deploy needs integration-tests) and the file does not have.
   */
  droppedDefaults: Dependency[];
}

interface DependencyRow {
  workflow: string;
  depends_on: string;
  source: string;
}

/**
 * The `source` of the seeded rows, which keep it while the file has them too. Rows that this
 * sync writes have `pipeline`.
 */
const SEEDED_SOURCE = 'default';

/**
 * Makes `workflow_dependencies` hold exactly the pipeline file's dependencies: adds the
 * missing rows, removes the rows the file no longer has, and audits the change. Does nothing when they already agree, so
 * processes starting together write once.
 */
export async function syncDependencies(
  store: Store,
  pipelines: PipelineFile,
  logger: Logger,
): Promise<DependencyChanges> {
  const expected = new Map<string, Dependency>();
  for (const pipeline of Object.values(pipelines.pipelines)) {
    for (const need of pipeline.needs)
      expected.set(`${pipeline.type}\0${need}`, [pipeline.type, need]);
  }
  const changes = await store.write(async (trx) => {
    const rows = await trx
      .selectFrom('workflow_dependencies')
      .select(['workflow', 'depends_on', 'source'])
      .orderBy('workflow')
      .orderBy('depends_on')
      .execute();
    const { changes, stale } = compareRows(rows, expected);
    for (const row of stale) {
      await trx
        .deleteFrom('workflow_dependencies')
        .where('workflow', '=', row.workflow)
        .where('depends_on', '=', row.depends_on)
        .execute();
    }
    if (changes.added.length > 0) {
      const now = nowIso();
      await trx
        .insertInto('workflow_dependencies')
        .values(
          changes.added.map(([workflow, dependsOn]) => ({
            workflow,
            depends_on: dependsOn,
            source: 'pipeline',
            created_at: now,
          })),
        )
        .execute();
    }
    if (hasChanges(changes)) {
      await appendAudit(
        trx,
        { actor: 'orchestrator', source: os.hostname() },
        {
          action: 'dependencies_synced',
          details: {
            pipeline_file: pipelines.source,
            added: changes.added,
            removed: changes.removed,
            dropped_defaults: changes.droppedDefaults,
          },
        },
      );
    }
    return changes;
  });
  if (hasChanges(changes)) {
    const { added, removed, droppedDefaults } = changes;
    logger.info(
      { added, removed, dropped_defaults: droppedDefaults, pipelines: pipelines.source },
      'dependencies updated from pipeline file',
    );
  }
  return changes;
}

/**
 * Compares the table's rows with the file's dependencies. `stale` are the rows to delete.
 */
function compareRows(rows: DependencyRow[], expected: Map<string, Dependency>) {
  const keyOf = (row: DependencyRow) => `${row.workflow}\0${row.depends_on}`;
  const pairOf = (row: DependencyRow): Dependency => [row.workflow, row.depends_on];
  const present = new Set(rows.map(keyOf));
  const stale = rows.filter((row) => !expected.has(keyOf(row)));
  const changes: DependencyChanges = {
    added: [...expected.entries()].filter(([key]) => !present.has(key)).map(([, pair]) => pair),
    removed: stale.filter((row) => row.source !== SEEDED_SOURCE).map(pairOf),
    droppedDefaults: stale.filter((row) => row.source === SEEDED_SOURCE).map(pairOf),
  };
  return { changes, stale };
}

function hasChanges(changes: DependencyChanges): boolean {
  return (
    changes.added.length > 0 || changes.removed.length > 0 || changes.droppedDefaults.length > 0
  );
}
