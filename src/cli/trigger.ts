/**
 * `slipway trigger TYPE --commit SHA [--branch B] [--matrix FIELD=V1,V2] [--wait]`: queues a
 * job over the HTTP API, as a GitHub Actions step would, and with --wait follows its logs and
 * exits with its result.
 *
 * Reads SLIPWAY_API_URL (default from API_HOST and API_PORT) and SLIPWAY_TOKEN (a token with the
 * trigger role), or without a token SLIPWAY_OIDC_AUDIENCE, for GitHub Actions OIDC tokens. Inside GitHub Actions it fills in --github-run-id and --github-run-attempt
 * from GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT, so a re-run step finds its job again instead of
 * queueing a second one, and writes `job-id` and `status` to GITHUB_OUTPUT.
 */
import fs from 'node:fs';
import os from 'node:os';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { isCommitSha } from '../jobs/refs.js';
import { formatDuration, parseDuration } from '../util/time.js';
import { followJob, interruptedResult, type FollowResult } from './follow-job.js';
import { InterruptWatch } from './interrupts.js';
import { CliError, loadCliTriggerConfig, runCommand } from './run.js';
import { sendTrigger } from './send-trigger.js';
import {
  githubOidcTokens,
  SlipwayClient,
  type TokenSource,
  type TriggerResponse,
} from './slipway-client.js';

/** Exit codes of `slipway trigger --wait`, one per way a job can end. */
export const TRIGGER_EXIT_CODES = {
  success: 0,
  failure: 1,
  /** Bad usage or configuration (shared with every slipway command). */
  usage: 2,
  error: 3,
  timed_out: 4,
  cancelled: 5,
  skipped: 6,
  /** --timeout passed before the job ended; the job keeps running unless --cancel-on-timeout. */
  wait_timeout: 7,
  /** The API could not be reached or rejected the request. */
  api: 8,
  /**
   * A signal arrived and the job could not be cancelled, because the cancel request failed or
   * the trigger request had no response in time, so a job may still be running.
   */
  cancel_failed: 9,
} as const;

const EXIT_HELP = Object.entries(TRIGGER_EXIT_CODES)
  .map(([name, code]) => `  ${code}  ${name}`)
  .join('\n');

interface TriggerOptions {
  commit: string;
  branch?: string;
  pythonVersions?: string[];
  matrix: Record<string, string[]>;
  param: Record<string, string>;
  githubRunId?: string;
  githubRunAttempt?: string;
  idempotencyKey?: string;
  wait?: boolean;
  timeout?: number;
  pollInterval: number;
  cancelOnTimeout?: boolean;
  cancelOnInterrupt: boolean;
}

const DEFAULT_POLL_INTERVAL_MS = 2_000;

/**
 * Maximum --poll-interval. Logs stream as they are written, so the interval only decides how
 * soon the CLI notices new tasks, the end of the job and a dropped log stream. The limit also
 * catches a count of milliseconds typed as a bare number, which means seconds (2000 would be
 * 33m20s), and keeps the interval far below the 2^31-1 ms that Node's setTimeout accepts.
 */
const MAX_POLL_INTERVAL_MS = 5 * 60_000;

function parseMs(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) {
    throw new InvalidArgumentError('a duration such as 90s, 20m or 1h30m');
  }
  return ms;
}

function parsePollInterval(value: string): number {
  const ms = parseMs(value);
  if (ms > MAX_POLL_INTERVAL_MS) {
    throw new InvalidArgumentError(
      `must be at most ${formatDuration(MAX_POLL_INTERVAL_MS)}, got ${formatDuration(ms)}`,
    );
  }
  return ms;
}

function collectParam(value: string, previous: Record<string, string>): Record<string, string> {
  const split = value.indexOf('=');
  if (split <= 0) throw new InvalidArgumentError('KEY=VALUE');
  const key = value.slice(0, split);
  if (Object.hasOwn(previous, key)) {
    throw new InvalidArgumentError(`key "${key}" is repeated, but each key may appear only once`);
  }
  return { ...previous, [key]: value.slice(split + 1) };
}

/**
 * Trigger body fields that other options set, with those options. A matrix axis cannot read
 * them, and --matrix must not overwrite them.
 */
const RESERVED_FIELDS = new Map([
  ['commit', '--commit'],
  ['branch', '--branch'],
  ['params', '--param'],
  ['github_run_id', '--github-run-id'],
  ['github_run_attempt', '--github-run-attempt'],
]);

/** Parses `FIELD=V1,V2` into the values for the matrix axis that reads trigger field FIELD. */
function collectMatrix(
  value: string,
  previous: Record<string, string[]>,
): Record<string, string[]> {
  const split = value.indexOf('=');
  if (split <= 0) throw new InvalidArgumentError('FIELD=VALUE,VALUE..., e.g. node_versions=20,22');
  const field = value.slice(0, split);
  const option = RESERVED_FIELDS.get(field);
  if (option !== undefined) {
    throw new InvalidArgumentError(`"${field}" is no matrix field; set it with ${option}`);
  }
  if (Object.hasOwn(previous, field)) {
    throw new InvalidArgumentError(
      `field "${field}" is repeated; give all its values once, separated by commas`,
    );
  }
  return { ...previous, [field]: parseList(value.slice(split + 1)) };
}

function parseCommit(value: string): string {
  if (!isCommitSha(value)) throw new InvalidArgumentError('a hex SHA of 7 to 64 digits');
  return value;
}

function parseList(value: string): string[] {
  const items = value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  if (items.length === 0) throw new InvalidArgumentError('a comma-separated list, e.g. 3.11,3.12');
  return items;
}

export function registerTriggerCommands(program: Command): void {
  program
    .command('trigger')
    .description('queue a job over the API; with --wait, follow its logs and exit with its result')
    .argument(
      '<type>',
      "job type, one that the server's pipeline file defines; the shipped file defines ci, " +
        'integration-tests and deploy, and rollback and recovery for admin tokens',
    )
    .requiredOption('--commit <sha>', 'commit to run (hex SHA, 7 to 64 digits)', parseCommit)
    .option('--branch <name>', 'branch of the commit')
    .option(
      '--python-versions <list>',
      'comma-separated values for the matrix axis with `from: python_versions`; the same as ' +
        '--matrix python_versions=<list>',
      parseList,
    )
    .option(
      '--matrix <field=list>',
      'comma-separated values for the matrix axis with `from: <field>`, e.g. ' +
        'node_versions=20,22 runs one task per value; repeat for more axes, each field once',
      collectMatrix,
      {},
    )
    .option(
      '--param <key=value>',
      'extra pipeline parameter, one string that steps read as SLIPWAY_PARAM_<KEY>; repeat ' +
        'for more keys, each key once. An axis with `from: <key>` takes it as one value, so ' +
        'give a list of values with --matrix',
      collectParam,
      {},
    )
    .addOption(
      new Option('--github-run-id <id>', 'GitHub run id, for idempotent re-runs').env(
        'GITHUB_RUN_ID',
      ),
    )
    .addOption(
      new Option('--github-run-attempt <n>', 'GitHub run attempt').env('GITHUB_RUN_ATTEMPT'),
    )
    .option('--idempotency-key <key>', 'sent as Idempotency-Key; a repeat returns the same job')
    .option('--wait', 'follow the logs and exit with the job result')
    .option(
      '--timeout <duration>',
      'with --wait, stop waiting after this long (e.g. 45m or 1h30m; a bare number is seconds)',
      parseMs,
    )
    .addOption(
      new Option(
        '--poll-interval <duration>',
        'with --wait, how often to check the job (e.g. 2s or 500ms; a bare number is seconds; ' +
          `at most ${formatDuration(MAX_POLL_INTERVAL_MS)})`,
      )
        .argParser(parsePollInterval)
        .default(DEFAULT_POLL_INTERVAL_MS, formatDuration(DEFAULT_POLL_INTERVAL_MS)),
    )
    .option('--cancel-on-timeout', 'cancel the job when --timeout passes')
    .option('--no-cancel-on-interrupt', 'leave the job running on SIGINT, SIGTERM or SIGHUP')
    .addHelpText(
      'after',
      `\nEnvironment:\n  SLIPWAY_API_URL  API base URL (default http://API_HOST:API_PORT, so http://127.0.0.1:5000\n                   when neither is set)\n` +
        `  SLIPWAY_TOKEN    token with the trigger role\n` +
        `  SLIPWAY_OIDC_AUDIENCE  without SLIPWAY_TOKEN: send GitHub Actions OIDC tokens for this\n` +
        `                   audience (the job needs permissions: id-token: write)\n\nExit codes (without --wait, 0 once the job is queued, or 2, 5, 8 or 9):\n${EXIT_HELP}\n` +
        '  128 + the signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP) with\n' +
        '      --no-cancel-on-interrupt: the job keeps running\n',
    )
    .action(async (type: string, options: TriggerOptions, command: Command) => {
      rejectAttemptWithoutRunId(options, command);
      rejectWaitOptionsWithoutWait(options, command);
      if (options.pythonVersions !== undefined && 'python_versions' in options.matrix) {
        command.error(
          "error: options '--python-versions' and '--matrix python_versions=...' both set " +
            'python_versions; give one of them',
        );
      }
      await runCommand(() => runTrigger(type, options));
    });
}

/**
 * Exits 2 when a GitHub run attempt comes without its run id. An attempt number identifies
 * nothing alone, and the API rejects such a request with 400.
 */
function rejectAttemptWithoutRunId(options: TriggerOptions, command: Command): void {
  if (options.githubRunAttempt === undefined || options.githubRunId !== undefined) return;
  const source =
    command.getOptionValueSource('githubRunAttempt') === 'env'
      ? ' (set from GITHUB_RUN_ATTEMPT)'
      : '';
  command.error(
    `error: option '--github-run-attempt <n>'${source} requires option '--github-run-id <id>' ` +
      '(or GITHUB_RUN_ID); give both or neither',
  );
}

/**
 * Exits 2 when an option of the wait comes without --wait, or --cancel-on-timeout without
 * --timeout. Such an option would be ignored, and the job would not be waited for or
 * cancelled as the caller expects.
 */
function rejectWaitOptionsWithoutWait(options: TriggerOptions, command: Command): void {
  const waitOptions = [
    options.timeout === undefined ? undefined : '--timeout <duration>',
    command.getOptionValueSource('pollInterval') === 'cli'
      ? '--poll-interval <duration>'
      : undefined,
    options.cancelOnTimeout === true ? '--cancel-on-timeout' : undefined,
  ].filter((option) => option !== undefined);
  if (options.wait !== true && waitOptions.length > 0) {
    command.error(
      `error: option '${waitOptions[0]}' requires option '--wait'; add --wait to wait for the ` +
        `job, or drop ${waitOptions[0]!.split(' ')[0]}`,
    );
  }
  if (options.cancelOnTimeout === true && options.timeout === undefined) {
    command.error(
      "error: option '--cancel-on-timeout' requires option '--timeout <duration>'; add " +
        '--timeout to say when to cancel, or drop --cancel-on-timeout',
    );
  }
}

async function runTrigger(type: string, options: TriggerOptions): Promise<void> {
  const config = loadCliTriggerConfig();
  let token: string | TokenSource | undefined = config.token;
  // In a GitHub Actions job, an OIDC token can stand in for a stored trigger token.
  if (token === undefined && config.oidcAudience !== undefined)
    token = githubOidcTokens(config.oidcAudience);
  if (token === undefined) {
    throw new CliError(
      'SLIPWAY_TOKEN is not set; create one with `slipway token create --name <name> --role ' +
        'trigger`, or in a GitHub Actions job set SLIPWAY_OIDC_AUDIENCE to use an OIDC token',
      2,
    );
  }
  const client = new SlipwayClient(config.apiUrl, token);
  const body: Record<string, unknown> = { commit: options.commit };
  if (options.branch !== undefined) body.branch = options.branch;
  if (options.pythonVersions !== undefined) body.python_versions = options.pythonVersions;
  Object.assign(body, options.matrix);
  if (Object.keys(options.param).length > 0) body.params = options.param;
  if (options.githubRunId !== undefined) body.github_run_id = options.githubRunId;
  if (options.githubRunAttempt !== undefined) body.github_run_attempt = options.githubRunAttempt;

  // Signals are watched from before the trigger request, so that one arriving while the
  // request is in flight cancels the job that it creates.
  const interrupts = new InterruptWatch().start();
  try {
    await triggerAndFollow(client, type, body, options, interrupts);
  } finally {
    interrupts.stop();
  }
}

async function triggerAndFollow(
  client: SlipwayClient,
  type: string,
  body: Record<string, unknown>,
  options: TriggerOptions,
  interrupts: InterruptWatch,
): Promise<void> {
  let created: TriggerResponse;
  try {
    created = await sendTrigger(
      client,
      { type, body, idempotencyKey: options.idempotencyKey },
      interrupts,
    );
  } catch (error) {
    if (error instanceof CliError && error.exitCode === TRIGGER_EXIT_CODES.cancel_failed) {
      writeGitHubOutput({ status: 'cancel_failed' });
    }
    throw error;
  }
  process.stderr.write(`slipway: ${describeTrigger(created, options)}\n`);
  process.stdout.write(`${created.job_id}\n`);
  writeGitHubOutput({ 'job-id': created.job_id, status: created.status });
  if (interrupts.signal !== undefined) {
    finish(
      created.job_id,
      await interruptedResult(client, created.job_id, interrupts.signal, options),
    );
    return;
  }
  if (options.wait !== true) return;

  const result = await followJob(client, created.job_id, {
    pollIntervalMs: options.pollInterval,
    timeoutMs: options.timeout,
    cancelOnTimeout: options.cancelOnTimeout === true,
    cancelOnInterrupt: options.cancelOnInterrupt,
    output: process.stdout,
    interrupts,
  });
  finish(created.job_id, result);
}

/**
 * Returns the line that reports the trigger, the same as scripts/slipway-trigger.sh prints. A
 * new job may be waiting or skipped, not only queued, so the line names its status. A reused
 * job (200) was created by an earlier request with the same Idempotency-Key or GitHub run.
 */
function describeTrigger(created: TriggerResponse, options: TriggerOptions): string {
  const head = `${created.job_id} for ${options.commit} (status ${created.status})`;
  if (!created.reused) return `triggered ${head}`;
  const run =
    options.githubRunId === undefined
      ? undefined
      : `GitHub run ${options.githubRunId} attempt ${options.githubRunAttempt ?? 1}`;
  const key =
    options.idempotencyKey === undefined
      ? undefined
      : `Idempotency-Key ${JSON.stringify(options.idempotencyKey)}`;
  const by = [key, run].filter((part) => part !== undefined).join(' or ');
  return `found ${head}: an earlier trigger with ${by} created it`;
}

function finish(jobId: string, result: FollowResult): never | void {
  writeGitHubOutput({ status: result.status });
  if (result.status === 'interrupted') {
    // The shell's convention for a command that a signal ended: 128 and the signal's number.
    const code = 128 + os.constants.signals[result.signal ?? 'SIGINT'];
    writeStepSummary(`Stopped following Slipway job \`${jobId}\`: ${result.reason}`);
    process.stderr.write(
      `slipway: stopped following job ${jobId}: ${result.reason} (exit ${code})\n`,
    );
    throw new CliError(`stopped following job ${jobId}`, code, true);
  }
  if (result.status === 'cancel_failed') {
    const code = TRIGGER_EXIT_CODES.cancel_failed;
    writeStepSummary(`Cancelling Slipway job \`${jobId}\` ${result.reason}`);
    process.stderr.write(`slipway: cancelling job ${jobId} ${result.reason} (exit ${code})\n`);
    throw new CliError(`cancelling job ${jobId} failed`, code, true);
  }
  writeStepSummary(
    `Slipway job \`${jobId}\` ended **${result.status}**${result.reason ? `: ${result.reason}` : ''}`,
  );
  const code =
    result.status in TRIGGER_EXIT_CODES
      ? TRIGGER_EXIT_CODES[result.status as keyof typeof TRIGGER_EXIT_CODES]
      : TRIGGER_EXIT_CODES.error;
  const reason = result.reason === null ? '' : `: ${result.reason}`;
  process.stderr.write(`slipway: job ${jobId} ended ${result.status}${reason} (exit ${code})\n`);
  if (code !== 0) throw new CliError(`job ${jobId} ended ${result.status}`, code, true);
}

/** Appends `name=value` lines to the file GitHub Actions reads step outputs from. */
function writeGitHubOutput(values: Record<string, string>): void {
  const file = process.env.GITHUB_OUTPUT;
  if (file === undefined || file === '') return;
  const lines = Object.entries(values).map(
    ([name, value]) => `${name}=${value.replace(/\n/g, ' ')}\n`,
  );
  fs.appendFileSync(file, lines.join(''));
}

function writeStepSummary(markdown: string): void {
  const file = process.env.GITHUB_STEP_SUMMARY;
  if (file === undefined || file === '') return;
  fs.appendFileSync(file, `${markdown}\n`);
}
