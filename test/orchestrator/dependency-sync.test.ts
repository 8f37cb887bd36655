/** The start-time sync of the pipeline file's `needs:` to workflow_dependencies. */
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { syncDependencies } from '../../src/orchestrator/dependency-sync.js';
import {
  DEFAULT_PIPELINES_PATH,
  loadPipelineFile,
  parsePipelineFile,
} from '../../src/pipeline/load.js';
import { openStore, type Store } from '../../src/store/database.js';
import { makeTempDir } from '../support/server.js';

/** A pipeline file without the built-in chain: deploy needs ci only. */
const OWN_FILE = parsePipelineFile(
  [
    'pipelines:',
    '  ci:',
    '    steps: [{ run: make }]',
    '  deploy:',
    '    needs: [ci]',
    '    steps: [{ run: make deploy }]',
  ].join('\n'),
  'slipway.yml',
);

/** The seeds of the migration that creates the table on a new data directory. */
const SEEDED = [
  ['deploy', 'integration-tests'],
  ['integration-tests', 'ci'],
];

interface LogLine {
  msg: string;
  added?: unknown;
  removed?: unknown;
  dropped_defaults?: unknown;
}

function captureLogger() {
  const lines: LogLine[] = [];
  const logger = pino({}, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

async function tableRows(store: Store) {
  const rows = await store.db
    .selectFrom('workflow_dependencies')
    .select(['workflow', 'depends_on', 'source'])
    .orderBy('workflow')
    .execute();
  return rows.map((row) => [row.workflow, row.depends_on, row.source]);
}

async function syncedAudits(store: Store) {
  const rows = await store.db
    .selectFrom('audit_log')
    .select('details')
    .where('action', '=', 'dependencies_synced')
    .orderBy('id')
    .execute();
  return rows.map((row) => JSON.parse(row.details) as Record<string, unknown>);
}

describe('dependency sync', () => {
  let store: Store | undefined;

  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  it('reports no removal on a new data directory', async () => {
    store = await openStore(path.join(makeTempDir(), 'state.db'));
    const { logger, lines } = captureLogger();

    const changes = await syncDependencies(store, OWN_FILE, logger);

    expect(changes.added).toEqual([['deploy', 'ci']]);
    expect(changes.removed).toEqual([]);
    expect(changes.droppedDefaults).toEqual(SEEDED);
    expect(lines).toHaveLength(1);
    expect(lines[0]?.removed).toEqual([]);
    expect(lines[0]?.dropped_defaults).toEqual(SEEDED);
    const [audit] = await syncedAudits(store);
    expect(audit?.removed).toEqual([]);
    expect(audit?.dropped_defaults).toEqual(SEEDED);
    expect(await tableRows(store)).toEqual([['deploy', 'ci', 'pipeline']]);
  });

  it('writes nothing when the file matches', async () => {
    store = await openStore(path.join(makeTempDir(), 'state.db'));
    await syncDependencies(store, OWN_FILE, captureLogger().logger);
    const { logger, lines } = captureLogger();

    const changes = await syncDependencies(store, OWN_FILE, logger);

    expect(changes).toEqual({ added: [], removed: [], droppedDefaults: [] });
    expect(lines).toEqual([]);
    expect(await syncedAudits(store)).toHaveLength(1);
  });

  it('keeps seeded rows as defaults', async () => {
    store = await openStore(path.join(makeTempDir(), 'state.db'));
    const builtIn = loadPipelineFile(DEFAULT_PIPELINES_PATH);
    const first = captureLogger();

    // The built-in file has the seeded chain, so the first start changes nothing.
    const unchanged = await syncDependencies(store, builtIn, first.logger);
    expect(unchanged).toEqual({ added: [], removed: [], droppedDefaults: [] });
    expect(first.lines).toEqual([]);
    expect(await syncedAudits(store)).toEqual([]);
    expect(await tableRows(store)).toEqual([
      ['deploy', 'integration-tests', 'default'],
      ['integration-tests', 'ci', 'default'],
    ]);

    const second = captureLogger();
    const changes = await syncDependencies(store, OWN_FILE, second.logger);
    expect(changes.removed).toEqual([]);
    expect(changes.droppedDefaults).toEqual(SEEDED);
    expect(second.lines).toHaveLength(1);
    expect(second.lines[0]?.dropped_defaults).toEqual(SEEDED);
  });
});
