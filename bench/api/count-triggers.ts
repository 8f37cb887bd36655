/**
 * CPU time that the job count triggers (migration 0022_job_status_counts) add to a trigger.
 * Two stores run in this process, one with the triggers and one without, and take turns.
 * Each round sends `--batch` triggers to one and then to the other, from 32 callers as
 * bench/api/trigger-store.ts does: the job, two tasks, the audit row and the cancel of the
 * branch's previous job. Taking turns in one process keeps the JIT state and most of the
 * machine's load the same for both, which separate runs do not.
 *
 * Usage: npx tsx bench/api/count-triggers.ts [--rounds 30] [--batch 1500]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createContext, type AppContext } from '../../src/app/context.js';
import { loadConfig } from '../../src/config/env.js';
import { createLogger } from '../../src/log.js';
import { triggerJob } from '../../src/orchestrator/trigger.js';
import { ciTrigger } from './ci-trigger.js';

const { values: options } = parseArgs({
  options: {
    rounds: { type: 'string', default: '30' },
    batch: { type: 'string', default: '1500' },
  },
});
const ROUNDS = Number(options.rounds);
const BATCH = Number(options.batch);
const CONCURRENCY = 32;
const audit = { actor: 'bench', requestId: 'bench', source: '127.0.0.1' };
const dataDirs: string[] = [];

async function openContext(withTriggers: boolean): Promise<AppContext> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-bench-counts-'));
  dataDirs.push(dataDir);
  const config = loadConfig({ SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' });
  const context = await createContext(config, { logger: createLogger('warn') });
  if (!withTriggers) {
    context.store.sqlite.exec(`
      DROP TRIGGER jobs_count_insert;
      DROP TRIGGER jobs_count_update;
      DROP TRIGGER jobs_count_delete;
    `);
  }
  return context;
}

let runId = 0;

/** Sends `count` triggers from 32 callers and returns the CPU microseconds per trigger. */
async function cpuPerTrigger(context: AppContext, count: number): Promise<number> {
  let left = count;
  const caller = async () => {
    while (left > 0) {
      left -= 1;
      runId += 1;
      await triggerJob(context, ciTrigger(runId), audit);
    }
  };
  const before = process.cpuUsage();
  await Promise.all(Array.from({ length: CONCURRENCY }, caller));
  const cpu = process.cpuUsage(before);
  return (cpu.user + cpu.system) / count;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const withTriggers = await openContext(true);
const withoutTriggers = await openContext(false);
// One batch each first, so that both run JIT-compiled code when the measured rounds start.
await cpuPerTrigger(withTriggers, BATCH);
await cpuPerTrigger(withoutTriggers, BATCH);
const measured = { with: [] as number[], without: [] as number[] };
for (let round = 0; round < ROUNDS; round += 1) {
  measured.with.push(await cpuPerTrigger(withTriggers, BATCH));
  measured.without.push(await cpuPerTrigger(withoutTriggers, BATCH));
}
await withTriggers.store.close();
await withoutTriggers.store.close();
for (const dataDir of dataDirs) fs.rmSync(dataDir, { recursive: true, force: true });

const withMedian = median(measured.with);
const withoutMedian = median(measured.without);
console.log(`${ROUNDS} rounds of ${BATCH} triggers each, CPU per trigger (user + system)`);
console.log(`with count triggers     median ${withMedian.toFixed(1)} µs`);
console.log(`without count triggers  median ${withoutMedian.toFixed(1)} µs`);
console.log(`difference              ${(withMedian - withoutMedian).toFixed(1)} µs`);
