/**
 * Triggers per second of the store alone, without HTTP. Each call does the work of
 * `POST /api/trigger/ci`: the job, its two tasks, the audit row and the cancel of the previous
 * job of the branch, committed and fsynced. `--concurrency` callers run at once for
 * `--seconds`. The result is the ceiling that one process's SQLite writer sets for
 * bench/api/run.sh; the CPU time per trigger is printed with it.
 *
 * With --branch-per-trigger every trigger names its own branch, so none cancels another: the
 * cost of the trigger without the cancel.
 *
 * Usage: npx tsx bench/api/trigger-store.ts [--concurrency 32] [--seconds 8] [--branch-per-trigger]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createContext } from '../../src/app/context.js';
import { loadConfig } from '../../src/config/env.js';
import { createLogger } from '../../src/log.js';
import { triggerJob } from '../../src/orchestrator/trigger.js';
import { ciTrigger } from './ci-trigger.js';

const { values: options } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '8' },
    'branch-per-trigger': { type: 'boolean', default: false },
  },
});
const CONCURRENCY = Number(options.concurrency);
const SECONDS = Number(options.seconds);

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-bench-store-'));
const config = loadConfig({ SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' });
const context = await createContext(config, { logger: createLogger('warn') });
const audit = { actor: 'bench', requestId: 'bench', source: '127.0.0.1' };

let runId = 0;
let triggers = 0;
const deadline = Date.now() + SECONDS * 1000;
const cpuBefore = process.cpuUsage();
const started = performance.now();

async function caller(): Promise<void> {
  while (Date.now() < deadline) {
    runId += 1;
    await triggerJob(
      context,
      ciTrigger(runId, options['branch-per-trigger'] ? `branch-${runId}` : 'main'),
      audit,
    );
    triggers += 1;
  }
}

await Promise.all(Array.from({ length: CONCURRENCY }, () => caller()));
const elapsedSeconds = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuBefore);
const jobs = context.store.read(
  (sqlite) => (sqlite.prepare('SELECT count(*) AS n FROM jobs').get() as { n: number }).n,
);
await context.store.close();
fs.rmSync(dataDir, { recursive: true, force: true });

const cpuMicros = cpu.user + cpu.system;
const branches = options['branch-per-trigger'] ? 'a branch per trigger' : 'one branch';
console.log(`concurrency ${CONCURRENCY}, ${branches}, ${elapsedSeconds.toFixed(1)} s`);
console.log(`triggers/s            ${(triggers / elapsedSeconds).toFixed(0)}`);
console.log(`CPU per trigger       ${(cpuMicros / triggers).toFixed(0)} µs (user + system)`);
console.log(`jobs in the database  ${jobs} (${triggers} triggers)`);
