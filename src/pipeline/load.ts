/**
 * Loads the pipeline file: parses YAML, validates it against the schema and resolves it.
 * Every problem is reported with the file, the line and the field, all at once.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LineCounter, parseDocument, isMap, isScalar, isSeq, type Document, type Node } from 'yaml';
import { envName, PARAM_VARIABLE_PREFIX, TASK_VARIABLES } from '../dispatch/task-spec.js';
import { PROCESS_MARK_VARIABLE, PROCESS_OWNER_VARIABLE } from '../execution/local.js';
import { MAX_MATRIX_COMBINATIONS } from '../jobs/matrix.js';
import { isImageReference } from '../execution/image-reference.js';
import { describeUserProblem } from '../execution/container-user.js';
import { parseDuration } from '../util/time.js';
import {
  JOB_TYPE_PATTERN,
  MIN_MEMORY_BYTES,
  PipelineFileSchema,
  type RawHealthCheck,
  type RawPipeline,
  type RawPipelineFile,
} from './schema.js';
import { describeSchemaError, FailedFields, findSchemaFailures } from './schema-errors.js';
import { findAliasProblems } from './yaml-aliases.js';
import { resolveHealthChecks } from './health-checks.js';
import type { MatrixAxis, Pipeline, PipelineFile, RecoveryProcedure, SecretRef } from './types.js';

export const DEFAULT_PIPELINES_PATH = fileURLToPath(
  new URL('../../slipway.default.yml', import.meta.url),
);

/** Job types whose `side_effects` setting defaults to true, so a lost task is not run again. */
const SIDE_EFFECT_TYPES = new Set(['deploy', 'rollback', 'recovery']);
/** The timeout of a pipeline that sets none, also for job snapshots stored without one. */
export const DEFAULT_TIMEOUT_MS = 60 * 60_000;
const TEMPLATE = /\$\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}/g;

export interface PipelineProblem {
  file: string;
  line: number | undefined;
  /** Dotted path of the field, e.g. `pipelines.ci.steps.0.run`. */
  field: string;
  message: string;
}

export class PipelineFileError extends Error {
  readonly problems: PipelineProblem[];

  /** Sorts the problems by line. Those without a line come first. */
  constructor(problems: PipelineProblem[]) {
    const sorted = [...problems].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    super(
      `invalid pipeline file:\n${sorted
        .map(
          (p) => `  ${p.file}${p.line === undefined ? '' : `:${p.line}`}: ${p.field}: ${p.message}`,
        )
        .join('\n')}`,
    );
    this.problems = sorted;
    this.name = 'PipelineFileError';
  }
}

/** Picks the pipeline file: the given path, else ./slipway.yml when present, else the default. */
export function resolvePipelinesPath(configured: string | undefined, cwd = process.cwd()): string {
  if (configured !== undefined) return configured;
  const local = path.join(cwd, 'slipway.yml');
  return fs.existsSync(local) ? local : DEFAULT_PIPELINES_PATH;
}

export function loadPipelineFile(filePath: string): PipelineFile {
  let text: string;
  try {
    text = fs.readFileSync(filePath, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new PipelineFileError([
      {
        file: filePath,
        line: undefined,
        field: '(file)',
        message: `cannot be read (${reason}); point SLIPWAY_PIPELINES at a readable file`,
      },
    ]);
  }
  return parsePipelineFile(text, filePath);
}

/** Returns the first line of a YAML parser message, worded for the file rather than the library. */
function describeYamlError(message: string): string {
  // The first line ends with a colon before a code excerpt.
  const first = (message.split('\n')[0] ?? message).replace(/:$/, '');
  if (first.includes('parseAllDocuments')) {
    return 'the file holds more than one YAML document (a second ---); keep one';
  }
  return first;
}

/**
 * Drops the top-level fields whose names start with `x-`. As in compose files, they hold
 * anchors that pipelines merge with `<<: *name`, and Slipway reads nothing else from them.
 */
function withoutExtensionFields(raw: unknown): unknown {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  return Object.fromEntries(Object.entries(raw).filter(([key]) => !key.startsWith('x-')));
}

export function parsePipelineFile(text: string, file: string): PipelineFile {
  const lineCounter = new LineCounter();
  // `<<: *anchor` merges another mapping's fields, as in YAML 1.1 and compose files.
  const document = parseDocument(text, { lineCounter, uniqueKeys: true, merge: true });
  const lineOf = (segments: (string | number)[]) => findLine(document, lineCounter, segments);

  if (document.errors.length > 0) {
    throw new PipelineFileError(
      document.errors.map((error) => ({
        file,
        line: error.linePos?.[0]?.line,
        field: '(yaml)',
        message: describeYamlError(error.message),
      })),
    );
  }
  const aliasProblems = findAliasProblems(document, lineCounter);
  if (aliasProblems.length > 0) {
    throw new PipelineFileError(
      aliasProblems.map(({ line, message }) => ({ file, line, field: '(yaml)', message })),
    );
  }
  let raw: unknown;
  try {
    raw = withoutExtensionFields(document.toJS());
  } catch (error) {
    // Aliases resolve here. findAliasProblems has found undefined anchors and merges of a
    // non-map, so what remains is rarer, such as an alias loop.
    throw new PipelineFileError([
      { file, line: undefined, field: '(yaml)', message: (error as Error).message },
    ]);
  }
  const failures = findSchemaFailures(PipelineFileSchema, raw);
  const problems: PipelineProblem[] = failures.map(({ segments, message }) => ({
    file,
    line: lineOf(segments),
    field: segments.length === 0 ? '(top level)' : segments.join('.'),
    message,
  }));
  problems.push(...findUnclearUserNumbers(document, lineCounter, file));
  const failed = new FailedFields(failures);
  // Every cross-reference check starts from the job types, so without them none can run.
  if (failed.at(['pipelines'])) throw new PipelineFileError(problems);

  const report = (segments: (string | number)[], message: string) =>
    problems.push({ file, line: lineOf(segments), field: segments.join('.'), message });
  const resolved = resolveFile(raw as RawPipelineFile, file, report, failed);
  if (problems.length > 0) throw new PipelineFileError(problems);
  return resolved;
}

/**
 * Reports each job type's `user` that YAML reads as a number written other than in plain
 * decimal, such as 0x10, 012 or 1e3. YAML 1.2 reads them as 16, 12 and 1000, which is seldom
 * what was meant (YAML 1.1 read 012 as octal 10).
 */
function findUnclearUserNumbers(
  document: Document,
  lineCounter: LineCounter,
  file: string,
): PipelineProblem[] {
  const pipelines = document.get('pipelines', true);
  if (!isMap(pipelines)) return [];
  const problems: PipelineProblem[] = [];
  for (const pair of pipelines.items) {
    if (!isMap(pair.value)) continue;
    const user = pair.value.get('user', true);
    // Negative and fractional numbers get the schema's message.
    if (!isScalar(user) || typeof user.value !== 'number') continue;
    if (!Number.isInteger(user.value) || user.value < 0) continue;
    if (user.source === undefined || /^(0|[1-9]\d*)$/.test(user.source)) continue;
    const type = String((pair.key as { value?: unknown })?.value);
    problems.push({
      file,
      line: user.range ? lineCounter.linePos(user.range[0]).line : undefined,
      field: `pipelines.${type}.user`,
      message:
        `must be a uid in plain decimal digits, got ${user.source}, which YAML reads as the ` +
        `number ${user.value}; write the uid in decimal, or quote the value`,
    });
  }
  return problems;
}

/**
 * Line of the deepest node that exists along `segments`, 1-based. A map entry is located by
 * its key, so a nested map's problem points at the line that names it.
 */
function findLine(
  document: Document,
  lineCounter: LineCounter,
  segments: (string | number)[],
): number | undefined {
  for (let length = segments.length; length >= 0; length -= 1) {
    const keys = segments
      .slice(0, length)
      .map((key) => (/^\d+$/.test(String(key)) ? Number(key) : key));
    if (length > 0) {
      const parent = document.getIn(keys.slice(0, -1), true);
      if (isMap(parent)) {
        const pair = parent.items.find(
          (item) => String((item.key as { value?: unknown })?.value) === String(keys.at(-1)),
        );
        const keyNode = pair?.key as Node | undefined;
        if (keyNode?.range) return lineCounter.linePos(keyNode.range[0]).line;
      }
    }
    const node = (length === 0 ? document.contents : document.getIn(keys, true)) as
      Node | undefined;
    if (node?.range) return lineCounter.linePos(node.range[0]).line;
    if (length > 0) {
      const parent = document.getIn(keys.slice(0, -1), true);
      if (isSeq(parent) && parent.range) return lineCounter.linePos(parent.range[0]).line;
    }
  }
  return undefined;
}

type Report = (segments: (string | number)[], message: string) => void;

function resolveFile(
  raw: RawPipelineFile,
  file: string,
  report: Report,
  failed: FailedFields,
): PipelineFile {
  // Both maps are keyed by names from requests, and a plain object would also "contain" the
  // keys of Object.prototype: a trigger of job type "constructor" found a function.
  const pipelines = Object.create(null) as Record<string, Pipeline>;
  for (const [type, definition] of Object.entries(raw.pipelines)) {
    // A name that breaks the pattern is reported already and is no job type to refer to.
    if (!JOB_TYPE.test(type)) continue;
    const usable = withoutFailedFields(definition, ['pipelines', type], failed);
    pipelines[type] = resolvePipeline(type, usable, report, failed);
  }
  for (const pipeline of Object.values(pipelines)) {
    pipeline.needs.forEach((need, index) => {
      if (!(need in pipelines)) {
        report(['pipelines', pipeline.type, 'needs', index], `unknown job type "${need}"`);
      } else if (need === pipeline.type) {
        report(['pipelines', pipeline.type, 'needs', index], 'a pipeline cannot need itself');
      }
    });
  }
  const cycle = findCycle(pipelines);
  if (cycle !== undefined) {
    report(['pipelines', cycle[0]!, 'needs'], `dependency cycle: ${cycle.join(' -> ')}`);
  }

  const recovery = resolveRecovery(raw.recovery, pipelines, report, failed);
  const healthChecks = failed.at(['health_checks'])
    ? []
    : resolveHealthChecks(
        usableHealthChecks(raw.health_checks ?? BUILT_IN_HEALTH_CHECKS, failed),
        {
          pipelines,
          recovery,
          repository: failed.within(['repository']) ? undefined : raw.repository,
        },
        report,
        describeSchemaError,
        failed,
      );

  return { source: file, repository: raw.repository, pipelines, recovery, healthChecks };
}

const JOB_TYPE = new RegExp(JOB_TYPE_PATTERN);

/**
 * Copies a pipeline without the fields that failed the schema, so the checks that read them
 * are skipped. A matrix keeps its axes when only some of them failed: resolveMatrix treats
 * those as axes without known values.
 */
function withoutFailedFields(
  raw: unknown,
  at: (string | number)[],
  failed: FailedFields,
): RawPipeline {
  const usable: Record<string, unknown> = {};
  if (failed.at(at)) return { steps: [] };
  for (const [field, value] of Object.entries(raw as RawPipeline)) {
    const fieldAt = [...at, field];
    if (field === 'matrix') {
      if (!failed.at(fieldAt)) usable[field] = value;
    } else if (!failed.within(fieldAt)) {
      usable[field] = value;
    } else if (PARTLY_CHECKED.has(field) && !failed.at(fieldAt)) {
      usable[field] = withoutFailedParts(value, fieldAt, failed);
    }
  }
  usable.steps ??= [];
  return usable as RawPipeline;
}

function isPresent<T>(value: T | null): value is T {
  return value !== null;
}

/**
 * Fields whose valid parts are still checked when another part failed, so that one file run
 * reports the problems of both.
 */
const PARTLY_CHECKED = new Set(['secrets', 'resources']);

/**
 * Keeps the fields of an object that passed the schema. In an array, an item that failed
 * becomes null, so that the others keep the index that locates them in the file.
 */
function withoutFailedParts(value: unknown, at: (string | number)[], failed: FailedFields) {
  if (Array.isArray(value)) {
    return value.map((item: unknown, index) => (failed.within([...at, index]) ? null : item));
  }
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).filter(
      ([key]) => !failed.within([...at, key]),
    ),
  );
}

function resolveRecovery(
  raw: RawPipelineFile['recovery'],
  pipelines: Record<string, Pipeline>,
  report: Report,
  failed: FailedFields,
): Record<string, RecoveryProcedure> {
  const recovery = Object.create(null) as Record<string, RecoveryProcedure>;
  if (failed.at(['recovery'])) return recovery;
  for (const [name, procedure] of Object.entries(raw ?? {})) {
    const at = ['recovery', name];
    if (failed.at(at)) continue;
    recovery[name] = {
      name,
      action: procedure.action,
      container: procedure.container,
      pipeline: procedure.pipeline,
      description: procedure.description,
    };
    if (failed.within([...at, 'action'])) continue;
    if (procedure.action === 'restart_container' && procedure.container === undefined) {
      report(at, 'restart_container needs "container"');
    }
    if (procedure.action === 'run_pipeline' && !failed.within([...at, 'pipeline'])) {
      if (procedure.pipeline === undefined) report(at, 'run_pipeline needs "pipeline"');
      else if (!(procedure.pipeline in pipelines)) {
        report([...at, 'pipeline'], `unknown job type "${procedure.pipeline}"`);
      }
    }
  }
  return recovery;
}

/**
 * Keeps the health checks whose name and type passed the schema, without their other failed
 * fields. A skipped check stays as `undefined` so that the others keep their index. A heal
 * whose action passed keeps its valid fields, so that the names they refer to are checked too.
 */
function usableHealthChecks(
  raw: RawHealthCheck[],
  failed: FailedFields,
): Array<RawHealthCheck | undefined> {
  return raw.map((check, index) => {
    const at = ['health_checks', index];
    if (failed.at(at) || failed.within([...at, 'name']) || failed.within([...at, 'type'])) {
      return undefined;
    }
    const usable: Record<string, unknown> = {};
    for (const [field, value] of Object.entries(check)) {
      const fieldAt = [...at, field];
      if (!failed.within(fieldAt)) {
        usable[field] = value;
      } else if (
        field === 'heal' &&
        !failed.at(fieldAt) &&
        !failed.within([...fieldAt, 'action'])
      ) {
        usable[field] = withoutFailedParts(value, fieldAt, failed);
      }
    }
    return usable as RawHealthCheck;
  });
}

/**
 * Checks of Slipway itself that a pipeline file without `health_checks` gets, as the shipped
 * file lists them. `health_checks: []` turns them off.
 */
const BUILT_IN_HEALTH_CHECKS = [
  { name: 'database', type: 'database' },
  { name: 'workers', type: 'workers' },
  { name: 'queue', type: 'queue' },
] as RawHealthCheck[];

function resolvePipeline(
  type: string,
  raw: RawPipeline,
  report: Report,
  failed: FailedFields,
): Pipeline {
  const at = ['pipelines', type];
  const matrix = resolveMatrix(raw.matrix, [...at, 'matrix'], report, failed);
  // Without a usable matrix the axis names are unknown, and the template checks need them.
  if (!failed.at([...at, 'matrix'])) {
    const axes = new Set(matrix.map((axis) => axis.name));
    const unknown = checkTemplates(raw.image, [...at, 'image'], axes, report);
    // An unknown value renders as empty text, so the rendered image would be reported too.
    if (raw.image !== undefined && unknown === 0) {
      checkImage(raw.image, matrix, [...at, 'image'], report);
    }
    raw.steps.forEach((step, index) => {
      checkRunTemplates(step.run, [...at, 'steps', index, 'run'], raw, report);
    });
  }
  if (raw.executor === 'docker' && raw.image === undefined && !failed.within([...at, 'image'])) {
    report(
      [...at, 'executor'],
      'is docker but "image" is missing; name the image the steps run in',
    );
  }
  const user = raw.user === undefined ? undefined : String(raw.user);
  if (user !== undefined) checkUser(user, raw, [...at, 'user'], report, failed);
  for (const field of ['timeout', 'dependency_timeout'] as const) {
    if (raw[field] !== undefined && durationMs(raw[field]) === 0) {
      report([...at, field], `must be positive, got ${JSON.stringify(raw[field])}`);
    }
  }

  checkSecrets(raw.secrets ?? [], [...at, 'secrets'], report);
  const secrets: SecretRef[] = (raw.secrets ?? []).filter(isPresent).map((secret) =>
    typeof secret === 'string'
      ? { name: secret, fromEnv: secret, fromFile: undefined }
      : {
          name: secret.name,
          fromEnv:
            secret.from_file === undefined ? (secret.from_env ?? secret.name) : secret.from_env,
          fromFile: secret.from_file,
        },
  );

  let concurrency: Pipeline['concurrency'];
  if (raw.concurrency !== undefined) {
    const group = typeof raw.concurrency === 'string' ? raw.concurrency : raw.concurrency.group;
    const cancelInProgress =
      typeof raw.concurrency === 'string' ? false : (raw.concurrency.cancel_in_progress ?? false);
    concurrency = { group: expandGroupShorthand(group), cancelInProgress };
    const groupAt = typeof raw.concurrency === 'string' ? 'concurrency' : ['concurrency', 'group'];
    const groupPath = [...at, ...[groupAt].flat()];
    if (group.trim() === '') report(groupPath, 'is blank; name the group');
    checkNamedTemplates(group, groupPath, GROUP_VALUES, report);
  }
  for (const [name, value] of Object.entries(raw.on_success?.state ?? {})) {
    checkNamedTemplates(String(value), [...at, 'on_success', 'state', name], STATE_VALUES, report);
  }

  const memory = raw.resources?.memory === undefined ? undefined : parseBytes(raw.resources.memory);
  if (memory !== undefined && memory < MIN_MEMORY_BYTES) {
    report(
      [...at, 'resources', 'memory'],
      `is ${memory} bytes; the Docker engine needs at least 6m (${MIN_MEMORY_BYTES} bytes)`,
    );
  }
  return {
    type,
    executor: raw.executor,
    image: raw.image,
    steps: raw.steps.map((step, index) => ({
      name: step.name ?? `step ${index + 1}`,
      run: step.run,
    })),
    matrix,
    env: Object.fromEntries(
      Object.entries(raw.env ?? {}).map(([key, value]) => [key, String(value)]),
    ),
    secrets,
    timeoutMs: durationMs(raw.timeout) ?? DEFAULT_TIMEOUT_MS,
    retries: raw.retries ?? 0,
    sideEffects: raw.side_effects ?? SIDE_EFFECT_TYPES.has(type),
    concurrency,
    needs: raw.needs ?? [],
    triggerNeeds: raw.trigger_needs ?? false,
    dependencyTimeoutMs: durationMs(raw.dependency_timeout),
    network: raw.network,
    user,
    resources: {
      memory,
      cpus: raw.resources?.cpus,
      pids: raw.resources?.pids,
    },
    onSuccess: {
      state: Object.fromEntries(
        Object.entries(raw.on_success?.state ?? {}).map(([key, value]) => [key, String(value)]),
      ),
    },
  };
}

/**
 * Resolves the matrix axes and checks that the fixed ones stay within the task limit that
 * every trigger would otherwise hit. An axis that failed the schema keeps its name but has no
 * known values.
 */
function resolveMatrix(
  raw: RawPipeline['matrix'],
  at: (string | number)[],
  report: Report,
  failed: FailedFields,
): MatrixAxis[] {
  const matrix: MatrixAxis[] = [];
  for (const [name, axis] of Object.entries(raw ?? {})) {
    if (failed.within([...at, name])) {
      matrix.push({ name, from: undefined, values: [] });
    } else if (Array.isArray(axis)) {
      matrix.push({ name, from: undefined, values: axis.map(String) });
    } else {
      matrix.push({ name, from: axis.from, values: (axis.default ?? []).map(String) });
      if (axis.from === undefined && axis.default === undefined) {
        report([...at, name], 'needs "from" or "default" values');
      }
    }
  }
  // An axis with "from" may get a single value from the trigger, so only fixed axes count.
  const fixed = matrix.filter((axis) => axis.from === undefined && axis.values.length > 0);
  const tasks = fixed.reduce((product, axis) => product * axis.values.length, 1);
  if (tasks > MAX_MATRIX_COMBINATIONS) {
    const sizes = fixed.map((axis) => `${axis.name}: ${axis.values.length}`).join(', ');
    report(
      at,
      `expands to ${tasks} tasks (values per axis: ${sizes}), more than the limit of ` +
        `${MAX_MATRIX_COMBINATIONS} tasks per job; remove values or split the pipeline`,
    );
  }
  return matrix;
}

/**
 * `branch` and `commit` alone mean one group per job type and branch, or per job type and
 * commit. Git forbids `:` in branch names, so the separator cannot make two groups collide.
 */
function expandGroupShorthand(group: string): string {
  if (group === 'branch') return '${{ type }}:${{ branch }}';
  if (group === 'commit') return '${{ type }}:${{ commit }}';
  return group;
}

/** Values that a concurrency group may name: the job's own fields, known at the trigger. */
const GROUP_VALUES = ['type', 'branch', 'commit'];
/** Values that on_success.state may name (see jobTemplateValues). */
const STATE_VALUES = ['commit', 'branch', 'job_id', 'type'];

/** Reports each template value in `text` other than `allowed`, which would render as empty text. */
function checkNamedTemplates(
  text: string,
  at: (string | number)[],
  allowed: readonly string[],
  report: Report,
): void {
  const names = [...text.matchAll(ANY_TEMPLATE)].map((match) => match[1]!.trim());
  const opened = text.split('${{').length - 1;
  if (opened > names.length) {
    report(at, `has "\${{" without a closing "}}"; write a template as \${{ name }}`);
  }
  for (const name of names) {
    if (!allowed.includes(name)) {
      report(
        at,
        `unknown template value "${name}" (only ${allowed.map((value) => `\${{ ${value} }}`).join(', ')} may be used here)`,
      );
    }
  }
}

/**
 * Reports a secret listed twice, one named like a variable that Slipway sets, one with both
 * from_env and from_file, and a from_file that is not an absolute path. The worker would read
 * a relative path from its own working directory, which no pipeline controls.
 */
function checkSecrets(
  secrets: NonNullable<RawPipeline['secrets']>,
  at: (string | number)[],
  report: Report,
): void {
  const seen = new Map<string, number>();
  secrets.forEach((secret, index) => {
    // An item that failed the schema is null here (see withoutFailedParts).
    if (!isPresent(secret)) return;
    const name = typeof secret === 'string' ? secret : secret.name;
    const first = seen.get(name);
    if (first !== undefined) {
      report([...at, index], `lists secret ${name} again (first at index ${first}); list it once`);
    }
    seen.set(name, first ?? index);
    const reserved = describeReservedName(name);
    if (reserved !== undefined) {
      report(typeof secret === 'string' ? [...at, index] : [...at, index, 'name'], reserved);
    }
    if (typeof secret === 'string') return;
    if (secret.from_env !== undefined && secret.from_file !== undefined) {
      report([...at, index], 'has both from_env and from_file; keep the one to read');
    }
    if (secret.from_file !== undefined && !path.isAbsolute(secret.from_file)) {
      report(
        [...at, index, 'from_file'],
        `must be an absolute path on the worker's host, got "${secret.from_file}"`,
      );
    }
  });
}

/**
 * Returns why a secret cannot be named `name`, or undefined when it can. The worker merges the
 * secrets into the environment that Slipway builds for a step, so a secret with the name of
 * one of Slipway's own variables would replace it or be replaced by it.
 */
function describeReservedName(name: string): string | undefined {
  const rule = "a secret must not share a name with Slipway's own variables, so rename it";
  if ((TASK_VARIABLES as readonly string[]).includes(name)) {
    return `secret ${name} uses the reserved name ${name}, which Slipway sets in every step's environment; ${rule}`;
  }
  if (name === PROCESS_MARK_VARIABLE || name === PROCESS_OWNER_VARIABLE) {
    return `secret ${name} uses the reserved name ${name}, which the local executor sets in its steps' environment; ${rule}`;
  }
  if (name.startsWith(PARAM_VARIABLE_PREFIX)) {
    return `secret ${name} uses the reserved prefix ${PARAM_VARIABLE_PREFIX}, which Slipway gives each trigger parameter; ${rule}`;
  }
  return undefined;
}

/**
 * Reports an invalid container `user`, and a `user` on a job type that may run with
 * the local executor. Local steps always run as the worker's user, so the setting would be
 * dropped without a word.
 */
function checkUser(
  user: string,
  raw: RawPipeline,
  at: (string | number)[],
  report: Report,
  failed: FailedFields,
): void {
  const problem = describeUserProblem(user);
  if (problem !== undefined) report(at, problem);
  // An executor that failed the schema is reported already, and its intent is unknown.
  if (failed.within([...at.slice(0, -1), 'executor'])) return;
  if (raw.executor === 'local') {
    report(
      at,
      'applies only to the docker executor, and this job type has executor: local, whose ' +
        'steps run as the worker\'s user; remove "user" or set executor: docker',
    );
  } else if (raw.executor === undefined) {
    report(
      at,
      "applies only to the docker executor; set executor: docker, because the worker's " +
        "default executor may be local, whose steps run as the worker's user",
    );
  }
}

/** Reports each template value in `text` that is not a matrix axis, and returns how many. */
function checkTemplates(
  text: string | undefined,
  at: (string | number)[],
  axes: Set<string>,
  report: Report,
): number {
  let unknown = 0;
  for (const match of text?.matchAll(TEMPLATE) ?? []) {
    const reference = match[1]!;
    const axis = reference.startsWith('matrix.') ? reference.slice('matrix.'.length) : undefined;
    if (axis === undefined || !axes.has(axis)) {
      report(at, `unknown template value "${reference}" (only matrix axes may be used here)`);
      unknown += 1;
    }
  }
  return unknown;
}

/** Any `${{ ... }}`, including text that TEMPLATE would not match, such as `${{ a b }}`. */
const ANY_TEMPLATE = /\$\{\{(.*?)\}\}/g;

/**
 * Rejects `${{ ... }}` in a step's command. The shell would fail on it ("Bad substitution"),
 * and trigger values are never pasted into commands, so each message names the environment
 * variable that carries the value instead (see taskEnvironment in src/dispatch/task-spec.ts).
 */
function checkRunTemplates(
  run: string,
  at: (string | number)[],
  raw: RawPipeline,
  report: Report,
): void {
  for (const match of run.matchAll(ANY_TEMPLATE)) {
    const reference = match[1]!.trim();
    report(at, `"${match[0]}" is not expanded in commands; ${describeReplacement(reference, raw)}`);
  }
}

function describeReplacement(reference: string, raw: RawPipeline): string {
  const [scope, ...rest] = reference.split('.');
  const name = rest.join('.');
  const useVariable = (variable: string, what: string) =>
    `use "$${variable}" (${what} as an environment variable) instead`;
  if (reference === 'commit') return useVariable('SLIPWAY_COMMIT', 'the commit SHA');
  if (reference === 'branch') return useVariable('SLIPWAY_BRANCH', 'the branch');
  if (scope === 'matrix' && name !== '') {
    if (raw.matrix !== undefined && name in raw.matrix) {
      return useVariable(envName(name), 'the matrix axis');
    }
    const axes = Object.keys(raw.matrix ?? {});
    return `this pipeline has no matrix axis "${name}"${
      axes.length === 0 ? '' : ` (axes: ${axes.join(', ')})`
    }`;
  }
  if ((scope === 'params' || scope === 'param') && name !== '') {
    return useVariable(`SLIPWAY_PARAM_${envName(name)}`, 'the trigger parameter');
  }
  if ((scope === 'env' || scope === 'secrets') && name !== '') {
    return useVariable(name, scope === 'env' ? 'the env entry' : 'the secret');
  }
  return (
    'trigger values reach steps only as environment variables: SLIPWAY_COMMIT, ' +
    'SLIPWAY_BRANCH, one per matrix axis and SLIPWAY_PARAM_<NAME> per trigger parameter'
  );
}

function findCycle(pipelines: Record<string, Pipeline>): string[] | undefined {
  const state = new Map<string, 'visiting' | 'done'>();
  const walk = (type: string, trail: string[]): string[] | undefined => {
    if (state.get(type) === 'done') return undefined;
    if (state.get(type) === 'visiting') return [...trail.slice(trail.indexOf(type)), type];
    state.set(type, 'visiting');
    for (const need of pipelines[type]?.needs ?? []) {
      if (need === type || !(need in pipelines)) continue;
      const cycle = walk(need, [...trail, type]);
      if (cycle !== undefined) return cycle;
    }
    state.set(type, 'done');
    return undefined;
  };
  for (const type of Object.keys(pipelines)) {
    const cycle = walk(type, []);
    if (cycle !== undefined) return cycle;
  }
  return undefined;
}

function durationMs(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return value * 1000;
  return parseDuration(value);
}

function parseBytes(value: string | number): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+(?:\.\d+)?)([kKmMgG]?)[bB]?$/.exec(value)!;
  const factor = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[
    match[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'
  ];
  return Math.round(Number(match[1]) * factor);
}

/**
 * Replaces `${{ name }}` in `template` with values from `values`; unknown names become
 * empty text. Only used for images, names and concurrency groups, never for commands.
 */
export function renderTemplate(template: string, values: Record<string, string>): string {
  return template.replace(TEMPLATE, (_match, name: string) => values[name] ?? '');
}

/**
 * Renders a job's concurrency group, or returns null when the template names a value the job
 * does not have (a trigger without a branch for `group: branch`). Such jobs would otherwise
 * all share one group and cancel each other.
 */
export function renderConcurrencyGroup(
  template: string,
  values: Record<string, string>,
): string | null {
  for (const match of template.matchAll(TEMPLATE)) {
    if ((values[match[1]!] ?? '') === '') return null;
  }
  return renderTemplate(template, values);
}

/**
 * Reports an image that is not a valid Docker image reference with each axis's default values,
 * or with `x` for an axis that only takes values from the trigger.
 */
function checkImage(
  image: string,
  matrix: readonly MatrixAxis[],
  at: (string | number)[],
  report: Report,
): void {
  const first = Object.fromEntries(matrix.map((axis) => [axis.name, axis.values[0] ?? 'x']));
  const samples = [first];
  for (const axis of matrix) {
    for (const value of axis.values.slice(1)) samples.push({ ...first, [axis.name]: value });
  }
  for (const sample of samples) {
    const rendered = renderImage(image, sample);
    if (isImageReference(rendered)) continue;
    report(at, `gives ${JSON.stringify(rendered)}, which is not a valid Docker image reference`);
    return;
  }
}

/** Renders an image template with a task's matrix values (`${{ matrix.<axis> }}`). */
export function renderImage(template: string, matrix: Record<string, string>): string {
  const values = Object.fromEntries(
    Object.entries(matrix).map(([axis, value]) => [`matrix.${axis}`, value]),
  );
  return renderTemplate(template, values);
}
