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

export interface DependencyChanges {
  added: Array<[workflow: string, dependsOn: string]>;
  removed: Array<[workflow: string, dependsOn: string]>;
}

/**
 * Makes `workflow_dependencies` hold exactly the pipeline file's dependencies: adds the
 * missing rows, removes the rows the file no longer has, and audits the change. Does nothing
 * when they already agree, so processes starting together write once.
 */
export async function syncDependencies(
  store: Store,
  pipelines: PipelineFile,
  logger: Logger,
): Promise<DependencyChanges> {
  const expected = new Map<string, [string, string]>();
  for (const pipeline of Object.values(pipelines.pipelines)) {
    for (const need of pipeline.needs)
      expected.set(`${pipeline.type}\0${need}`, [pipeline.type, need]);
  }
  const changes = await store.write(async (trx) => {
    const rows = await trx
      .selectFrom('workflow_dependencies')
      .select(['workflow', 'depends_on'])
      .execute();
    const present = new Set(rows.map((row) => `${row.workflow}\0${row.depends_on}`));
    const added = [...expected.entries()].filter(([key]) => !present.has(key)).map(([, e]) => e);
    const removed = rows
      .filter((row) => !expected.has(`${row.workflow}\0${row.depends_on}`))
      .map((row): [string, string] => [row.workflow, row.depends_on]);
    if (added.length === 0 && removed.length === 0) return { added, removed };

    for (const [workflow, dependsOn] of removed) {
      await trx
        .deleteFrom('workflow_dependencies')
        .where('workflow', '=', workflow)
        .where('depends_on', '=', dependsOn)
        .execute();
    }
    if (added.length > 0) {
      const now = nowIso();
      await trx
        .insertInto('workflow_dependencies')
        .values(
          added.map(([workflow, dependsOn]) => ({
            workflow,
            depends_on: dependsOn,
            source: 'pipeline',
            created_at: now,
          })),
        )
        .execute();
    }
    await appendAudit(
      trx,
      { actor: 'orchestrator', source: os.hostname() },
      {
        action: 'dependencies_synced',
        details: { pipeline_file: pipelines.source, added, removed },
      },
    );
    return { added, removed };
  });
  if (changes.added.length > 0 || changes.removed.length > 0) {
    logger.info(
      { ...changes, pipelines: pipelines.source },
      'dependencies updated from pipeline file',
    );
  }
  return changes;
}
