/**
 * Pushes state variables to the repository's GitHub Actions variables: create when GitHub
 * has none of that name, update when its value differs, leave it alone when equal. Names and
 * values are checked against GitHub's documented rules first, so a bad one fails alone with
 * a reason instead of costing a request.
 */
import type { AppContext } from '../app/context.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { listStateVariables } from '../store/state-variables.js';
import { nowIso } from '../util/time.js';
import { describeGitHubError, type GitHubClient } from './client.js';

export type SyncOutcome = 'created' | 'updated' | 'unchanged' | 'failed';

export interface VariableSyncResult {
  name: string;
  outcome: SyncOutcome;
  /** The reason it failed: the rule it breaks or GitHub's response. */
  reason?: string;
}

export interface SyncReport {
  /** `ok` when nothing failed, `partial` when some failed, `failed` when all did. */
  status: 'ok' | 'partial' | 'failed';
  repository: string;
  results: VariableSyncResult[];
  /** Name to value of the variables considered. */
  variables: Record<string, string>;
  count: number;
  timestamp: string;
}

/** GitHub's size limit for one configuration variable's value: 48 KB. */
export const MAX_VARIABLE_BYTES = 48 * 1024;

/**
 * Returns why GitHub would reject the name, or undefined. GitHub's rules: letters, digits
 * and underscores only, not starting with a digit, and no `GITHUB_` prefix (names are
 * case-insensitive, so neither `github_`).
 */
export function variableNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (!/^[A-Za-z0-9_]+$/.test(name)) {
    return 'GitHub variable names may contain only letters, digits and underscores';
  }
  if (/^[0-9]/.test(name)) return 'GitHub variable names must not start with a digit';
  if (/^GITHUB_/i.test(name)) return 'GitHub variable names must not start with GITHUB_';
  return undefined;
}

/** Returns why GitHub would reject the value, or undefined. */
export function variableValueProblem(value: string): string | undefined {
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > MAX_VARIABLE_BYTES) {
    return `the value is ${bytes} bytes; GitHub allows at most ${MAX_VARIABLE_BYTES} bytes (48 KB)`;
  }
  return undefined;
}

export interface SyncOptions {
  /** Sync only these state variables (all when undefined). */
  names?: readonly string[] | undefined;
  audit: AuditContext;
  /** Write the audit row even when nothing was created, updated or failed. */
  auditUnchanged: boolean;
}

/** Serialises syncs within the process, so two never race on the same variable. */
let queue: Promise<unknown> = Promise.resolve();

export function syncVariables(
  context: AppContext,
  client: GitHubClient,
  options: SyncOptions,
): Promise<SyncReport> {
  const run = queue.then(() => runSync(context, client, options));
  queue = run.catch(() => undefined);
  return run;
}

async function runSync(
  context: AppContext,
  client: GitHubClient,
  options: SyncOptions,
): Promise<SyncReport> {
  const requested = options.names === undefined ? undefined : new Set(options.names);
  const rows = (await listStateVariables(context.store.db)).filter(
    (row) => requested === undefined || requested.has(row.name),
  );
  const results = await pushVariables(client, rows);
  const report: SyncReport = {
    status: overallStatus(results),
    repository: client.repository,
    results,
    variables: Object.fromEntries(rows.map((row) => [row.name, row.value])),
    count: rows.length,
    timestamp: nowIso(),
  };

  await recordSync(context, rows, report, options);
  logSync(context, report);
  return report;
}

/**
 * Pushes each variable in turn. After GitHub fails to respond (5xx or no response, retries
 * included), the remaining variables are not tried, so a sync during an outage ends in
 * seconds, not minutes.
 */
async function pushVariables(
  client: GitHubClient,
  rows: Array<{ name: string; value: string }>,
): Promise<VariableSyncResult[]> {
  const results: VariableSyncResult[] = [];
  const seen = new Map<string, string>();
  let outage: string | undefined;
  for (const row of rows) {
    const problem = localProblem(row.name, row.value, seen);
    if (problem !== undefined) {
      results.push({ name: row.name, outcome: 'failed', reason: problem });
    } else if (outage !== undefined) {
      results.push({ name: row.name, outcome: 'failed', reason: `not sent: ${outage}` });
    } else {
      const pushed = await pushVariable(client, row.name, row.value);
      results.push(pushed.result);
      if (pushed.unavailable) outage = `GitHub was unavailable (${pushed.result.reason})`;
    }
  }
  return results;
}

function localProblem(name: string, value: string, seen: Map<string, string>): string | undefined {
  const problem = variableNameProblem(name) ?? variableValueProblem(value);
  if (problem !== undefined) return problem;
  const folded = name.toUpperCase();
  const other = seen.get(folded);
  if (other !== undefined) {
    return `GitHub variable names are case-insensitive, so ${name} would overwrite ${other}`;
  }
  seen.set(folded, name);
  return undefined;
}

interface PushOutcome {
  result: VariableSyncResult;
  /** True when GitHub responded with 5xx or not at all, after the client's retries. */
  unavailable: boolean;
}

async function pushVariable(
  client: GitHubClient,
  name: string,
  value: string,
): Promise<PushOutcome> {
  const { octokit, owner, repo } = client;
  const request = () => ({ signal: AbortSignal.timeout(30_000) });
  try {
    const current = await readVariable(client, name);
    if (current === value) return { result: { name, outcome: 'unchanged' }, unavailable: false };
    if (current === undefined) {
      try {
        await octokit.rest.actions.createRepoVariable({
          owner,
          repo,
          name,
          value,
          request: request(),
        });
        return { result: { name, outcome: 'created' }, unavailable: false };
      } catch (error) {
        // Someone created it between our read and our create: update it instead.
        if (describeGitHubError(error).status !== 409) throw error;
      }
    }
    await octokit.rest.actions.updateRepoVariable({ owner, repo, name, value, request: request() });
    return { result: { name, outcome: 'updated' }, unavailable: false };
  } catch (error) {
    const failure = describeGitHubError(error);
    const reason = `GitHub responded with ${failure.message}`;
    return {
      result: { name, outcome: 'failed', reason },
      unavailable: failure.status === 0 || failure.status >= 500,
    };
  }
}

/** Reads the variable's value on GitHub; returns undefined when GitHub responds with 404. */
async function readVariable(client: GitHubClient, name: string): Promise<string | undefined> {
  try {
    const response = await client.octokit.rest.actions.getRepoVariable({
      owner: client.owner,
      repo: client.repo,
      name,
      request: { signal: AbortSignal.timeout(30_000) },
    });
    return response.data.value;
  } catch (error) {
    if (describeGitHubError(error).status === 404) return undefined;
    throw error;
  }
}

function overallStatus(results: VariableSyncResult[]): SyncReport['status'] {
  const failed = results.filter((result) => result.outcome === 'failed').length;
  if (failed === 0) return 'ok';
  return failed === results.length ? 'failed' : 'partial';
}

/** Stores synced_at and synced_value of each variable GitHub now holds, with the audit row. */
async function recordSync(
  context: AppContext,
  rows: Array<{ name: string; value: string }>,
  report: SyncReport,
  options: SyncOptions,
): Promise<void> {
  const values = new Map(rows.map((row) => [row.name, row.value]));
  const changed = report.results.some((result) => result.outcome !== 'unchanged');
  await context.store.write(async (trx) => {
    for (const result of report.results) {
      if (result.outcome === 'failed') continue;
      await trx
        .updateTable('state_variables')
        .set({ synced_at: report.timestamp, synced_value: values.get(result.name)! })
        .where('name', '=', result.name)
        .execute();
    }
    if (!changed && !options.auditUnchanged) return;
    await appendAudit(trx, options.audit, {
      action: 'variables_synced',
      details: {
        repository: report.repository,
        status: report.status,
        results: report.results,
      },
    });
  });
}

function logSync(context: AppContext, report: SyncReport): void {
  const counts: Record<SyncOutcome, number> = { created: 0, updated: 0, unchanged: 0, failed: 0 };
  for (const result of report.results) counts[result.outcome] += 1;
  const log = context.logger.child({ component: 'github-variables' });
  if (counts.failed > 0) {
    log.warn(
      { ...counts, failures: report.results.filter((result) => result.outcome === 'failed') },
      `variable sync to ${report.repository}: ${counts.failed} of ${report.count} failed`,
    );
  } else {
    log.info(counts, `variable sync to ${report.repository} finished`);
  }
}
