/**
 * Runs the `run:` steps of a GitHub Actions workflow job with bash, the way a runner does:
 * `bash --noprofile --norc -eo pipefail`, the default GITHUB_* variables, the step's `env:`
 * with `${{ }}` expressions evaluated, and GITHUB_OUTPUT read back into `steps.<id>.outputs`.
 * A step that uses the Slipway action (`uses: .../slipway@...` or `./`) runs the composite
 * steps of the repository's action.yml with its inputs. Other `uses:` steps are skipped.
 *
 * Expressions support what the examples use: context paths (`github.sha`, `vars.X`,
 * `secrets.X`, `steps.id.outputs.name`, `inputs.x`), string literals and `||`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { makeTempDir } from '../support/server.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Step {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  env?: Record<string, string>;
  with?: Record<string, string>;
  if?: string;
}

export interface RunnerContext {
  github: Record<string, unknown>;
  vars: Record<string, string>;
  secrets: Record<string, string>;
  /** Environment every step gets (GITHUB_SHA, GITHUB_REF_NAME, ...). */
  env: Record<string, string>;
  /** Signal whose abort cancels the run as a runner does (see signalAsRunner). */
  cancel?: AbortSignal;
}

export interface StepResult {
  name: string;
  code: number | null;
  stdout: string;
  stderr: string;
  outputs: Record<string, string>;
}

export function loadWorkflow(file: string): { jobs: Record<string, { steps: Step[] }> } {
  return parse(fs.readFileSync(file, 'utf8')) as { jobs: Record<string, { steps: Step[] }> };
}

/** Runs scripts/slipway-trigger.sh with `args` and `env` added to a PATH. */
export function runTriggerScript(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [path.join(REPO_ROOT, 'scripts', 'slipway-trigger.sh'), ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A running scripts/slipway-trigger.sh, for tests that send it signals. */
export interface TriggerScriptProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves to the exit code, or null when a signal ended the script. */
  exited: Promise<number | null>;
}

/**
 * Starts scripts/slipway-trigger.sh with `args` and `env` added to a PATH. With `detached`, the
 * script leads a process group of its own, so that a test can signal the whole group.
 */
export function startTriggerScript(
  args: string[],
  env: Record<string, string>,
  options: { detached?: boolean } = {},
): TriggerScriptProcess {
  const child = spawn('bash', [path.join(REPO_ROOT, 'scripts', 'slipway-trigger.sh'), ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.detached ?? false,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Runs every step of `jobName` until one fails; `always()` steps run after a failure too. */
export async function runWorkflowJob(
  file: string,
  jobName: string,
  context: RunnerContext,
): Promise<StepResult[]> {
  const workflow = loadWorkflow(file);
  const job = workflow.jobs[jobName];
  if (job === undefined) throw new Error(`${file} has no job ${jobName}`);
  const steps: Record<string, { outputs: Record<string, string> }> = {};
  const results: StepResult[] = [];
  let failed = false;
  for (const [index, step] of job.steps.entries()) {
    if (failed && step.if !== 'always()') continue;
    const scope = { ...context, steps, inputs: {} };
    const result = await runStep(step, index, scope);
    if (result === undefined) continue;
    results.push(result);
    if (step.id !== undefined) steps[step.id] = { outputs: result.outputs };
    if (result.code !== 0) failed = true;
  }
  return results;
}

type Scope = RunnerContext & {
  steps: Record<string, { outputs: Record<string, string> }>;
  inputs: Record<string, string>;
};

async function runStep(step: Step, index: number, scope: Scope): Promise<StepResult | undefined> {
  const name = step.name ?? step.id ?? `step ${index + 1}`;
  if (step.uses !== undefined) {
    if (!/(^\.\/?$)|\/slipway@/.test(step.uses)) return undefined;
    return runSlipwayAction(name, step, scope);
  }
  if (step.run === undefined) return undefined;
  const env = evaluateMap(step.env ?? {}, scope);
  return runBash(name, evaluate(step.run, scope), { ...scope.env, ...env }, scope.cancel);
}

/** Runs the composite steps of action.yml, as GitHub does for `uses:` of the action. */
async function runSlipwayAction(name: string, step: Step, scope: Scope): Promise<StepResult> {
  const action = parse(fs.readFileSync(path.join(REPO_ROOT, 'action.yml'), 'utf8')) as {
    inputs: Record<string, { default?: string; required?: boolean }>;
    outputs: Record<string, { value: string }>;
    runs: { steps: Step[] };
  };
  const given = evaluateMap(step.with ?? {}, scope);
  const inputs: Record<string, string> = {};
  for (const [key, spec] of Object.entries(action.inputs)) {
    const value = given[key] ?? evaluate(spec.default ?? '', scope);
    if (spec.required === true && value === '') throw new Error(`input ${key} is required`);
    inputs[key] = value;
  }
  const inner: Scope = { ...scope, inputs, steps: {} };
  const env = { ...scope.env, GITHUB_ACTION_PATH: REPO_ROOT };
  let last: StepResult | undefined;
  for (const [index, innerStep] of action.runs.steps.entries()) {
    const stepEnv = evaluateMap(innerStep.env ?? {}, inner);
    last = await runBash(
      `${name} / ${index + 1}`,
      evaluate(innerStep.run ?? '', inner),
      { ...env, ...stepEnv },
      scope.cancel,
    );
    if (innerStep.id !== undefined) inner.steps[innerStep.id] = { outputs: last.outputs };
    if (last.code !== 0) break;
  }
  const outputs: Record<string, string> = {};
  for (const [key, spec] of Object.entries(action.outputs))
    outputs[key] = evaluate(spec.value, inner);
  return { ...last!, name, outputs };
}

/** How long actions/runner waits after SIGINT, and then after SIGTERM, for the step to exit. */
const SIGINT_GRACE_MS = 7_500;
const SIGTERM_GRACE_MS = 2_500;
/** How long actions/runner reads a step's output after the step's process exited. */
const STREAM_GRACE_MS = 5_000;

/**
 * Stops a step as actions/runner does on Linux when a run is cancelled (ProcessInvoker.cs):
 * SIGINT, then SIGTERM, then SIGKILL. It sends each with kill(2) to the step's own process,
 * not to its process group, so a child of the step's shell gets none of them.
 */
function signalAsRunner(child: ChildProcess): () => void {
  child.kill('SIGINT');
  const term = setTimeout(() => child.kill('SIGTERM'), SIGINT_GRACE_MS);
  const kill = setTimeout(() => child.kill('SIGKILL'), SIGINT_GRACE_MS + SIGTERM_GRACE_MS);
  return () => {
    clearTimeout(term);
    clearTimeout(kill);
  };
}

function runBash(
  name: string,
  script: string,
  env: Record<string, string>,
  cancel?: AbortSignal,
): Promise<StepResult> {
  const dir = makeTempDir('slipway-step-');
  const outputFile = path.join(dir, 'output');
  fs.writeFileSync(outputFile, '');
  const scriptFile = path.join(dir, 'step.sh');
  fs.writeFileSync(scriptFile, script);
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['--noprofile', '--norc', '-eo', 'pipefail', scriptFile], {
      env: { ...env, GITHUB_OUTPUT: outputFile },
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let stopTimers = () => {};
    const onCancel = () => (stopTimers = signalAsRunner(child));
    if (cancel?.aborted === true) onCancel();
    else cancel?.addEventListener('abort', onCancel, { once: true });
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    const finish = () => {
      stopTimers();
      cancel?.removeEventListener('abort', onCancel);
      resolve({ name, code: child.exitCode, stdout, stderr, outputs: readOutputs(outputFile) });
    };
    child.on('close', finish);
    // A process that the step left running keeps its output open. The runner stops reading
    // 5 s after the step's process exited, so the step ends then.
    child.on('exit', () => setTimeout(finish, STREAM_GRACE_MS).unref());
  });
}

function readOutputs(file: string): Record<string, string> {
  const outputs: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const split = line.indexOf('=');
    if (split > 0) outputs[line.slice(0, split)] = line.slice(split + 1);
  }
  return outputs;
}

function evaluateMap(values: Record<string, string>, scope: Scope): Record<string, string> {
  return Object.fromEntries(
    Object.entries(values).map(([key, value]) => [key, evaluate(String(value), scope)]),
  );
}

/** Replaces each `${{ expression }}` in `text`. */
export function evaluate(text: string, scope: object): string {
  return text.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_match, expression: string) => {
    for (const operand of expression.split('||')) {
      const value = evaluateOperand(operand.trim(), scope);
      if (value !== '') return value;
    }
    return '';
  });
}

function evaluateOperand(operand: string, scope: object): string {
  const literal = /^'(.*)'$/.exec(operand);
  if (literal !== null) return literal[1]!;
  let value: unknown = scope;
  for (const part of operand.split('.')) {
    if (value === null || typeof value !== 'object') return '';
    value = (value as Record<string, unknown>)[part];
  }
  return value === undefined || value === null ? '' : String(value);
}
