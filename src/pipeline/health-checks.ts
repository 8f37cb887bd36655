/**
 * Resolves the `health_checks` section: checks each type's settings against its schema, fills
 * in defaults and checks that self-healing actions name a container, job type or recovery
 * procedure that exists.
 */
import type { TObject } from '@sinclair/typebox';
import { Value, ValueErrorType, type ValueError } from '@sinclair/typebox/value';
import { WAL_DEGRADED_BYTES } from '../health/wal.js';
import { parseDuration } from '../util/time.js';
import { MAX_PARAM_NAME_LENGTH } from './schema-common.js';
import {
  COMMON_CHECK_FIELDS,
  HEALTH_SETTINGS_SCHEMAS,
  type RawDatabaseSettings,
  type RawDockerSettings,
  type RawHeal,
  type RawHttpSettings,
  type RawTailscaleSettings,
  type RawTcpSettings,
  type RawQueueSettings,
  type RawWorkersSettings,
} from './health-schema.js';
import type { RawHealthCheck } from './schema.js';
import type { FailedFields } from './schema-errors.js';
import type {
  DatabaseCheckSettings,
  FreeSpaceLimit,
  HealAction,
  HealthCheckDefinition,
  HealthCheckSettings,
  HealthThresholds,
  Pipeline,
  RecoveryProcedure,
} from './types.js';

export const DEFAULT_HEALTH_TIMEOUT_MS = 10_000;
const DEFAULT_INTEGRITY_INTERVAL_MS = 60 * 60_000;
const DEFAULT_STALE_AFTER_MS = 90_000;
const DEFAULT_MAX_WAIT_MS = 15 * 60_000;
const DEFAULT_COOLDOWN_MS = 10 * 60_000;
const DEFAULT_MAX_PER_HOUR = 3;

type Report = (segments: (string | number)[], message: string) => void;
type Describe = (error: ValueError) => string;

interface Known {
  pipelines: Record<string, Pipeline>;
  recovery: Record<string, RecoveryProcedure>;
  /** The file's `repository`, undefined when it sets none or the value failed the schema. */
  repository: string | undefined;
}

/**
 * Resolves the health checks. An `undefined` entry is a check whose name or type failed the
 * schema: it is reported already and skipped here. The other checks come without the fields
 * that failed, and `failed` names those fields so that none is reported as missing too.
 */
export function resolveHealthChecks(
  raw: Array<RawHealthCheck | undefined>,
  known: Known,
  report: Report,
  describe: Describe,
  failed: FailedFields,
): HealthCheckDefinition[] {
  const checks: HealthCheckDefinition[] = [];
  const names = new Set<string>();
  raw.forEach((check, index) => {
    if (check === undefined) return;
    const at = ['health_checks', index];
    if (names.has(check.name)) report([...at, 'name'], `duplicate check name "${check.name}"`);
    if (check.name.toUpperCase().replace(/[^A-Z0-9]/g, '_') === 'STATUS') {
      report(
        [...at, 'name'],
        'is reserved: HEALTH_STATUS holds the overall status; rename the check',
      );
    }
    names.add(check.name);

    const settings = Object.fromEntries(
      Object.entries(check).filter(([key]) => !COMMON_CHECK_FIELDS.includes(key)),
    );
    const schema = HEALTH_SETTINGS_SCHEMAS[check.type];
    const settingsErrors = [...Value.Errors(schema, settings)];
    const reported = new Set<string>();
    for (const error of settingsErrors) {
      // A field can fail several rules (missing and not an integer); its first error is enough.
      if (reported.has(error.path)) continue;
      reported.add(error.path);
      const segments = error.path.split('/').slice(1);
      report([...at, ...segments], describeSettingsError(error, check.type, describe));
    }

    const thresholds: HealthThresholds = {
      down: check.thresholds?.down ?? 1,
      up: check.thresholds?.up ?? 1,
    };
    // The heal reads none of the settings, so it is checked even when they failed.
    const heal =
      check.heal === undefined
        ? undefined
        : resolveHeal(check.heal, thresholds, known, [...at, 'heal'], report, failed);
    if (settingsErrors.length > 0) return;

    const typed = resolveSettings(check.type, settings, [...at], report);
    checks.push({
      ...typed,
      name: check.name,
      intervalMs: durationMs(check.interval),
      timeoutMs: durationMs(check.timeout) ?? DEFAULT_HEALTH_TIMEOUT_MS,
      thresholds,
      heal,
    });
  });
  return checks;
}

function describeSettingsError(error: ValueError, type: string, describe: Describe): string {
  const message = describe(error);
  if (error.type === ValueErrorType.ObjectAdditionalProperties) {
    const settings = Object.keys((error.schema as TObject).properties ?? {});
    return `is not a setting of a ${type} check; its settings: ${settings.join(', ')}`;
  }
  if (message === 'is required') return `is required for a ${type} check`;
  return message;
}

function resolveSettings(
  type: RawHealthCheck['type'],
  raw: Record<string, unknown>,
  at: (string | number)[],
  report: Report,
): HealthCheckSettings {
  switch (type) {
    case 'http': {
      const http = raw as RawHttpSettings;
      checkUrl(http.url, [...at, 'url'], report);
      if (http.method === 'HEAD' && http.expect_body !== undefined) {
        report([...at, 'expect_body'], 'cannot be checked with method HEAD, which has no body');
      }
      return {
        type,
        settings: {
          url: http.url,
          method: http.method ?? 'GET',
          expectStatus: http.expect_status === undefined ? undefined : [http.expect_status].flat(),
          expectBody: http.expect_body,
          headers: http.headers ?? {},
          degradedLatencyMs: durationMs(http.degraded_latency),
        },
      };
    }
    case 'tcp': {
      const tcp = raw as RawTcpSettings;
      return {
        type,
        settings: {
          host: tcp.host ?? '127.0.0.1',
          port: tcp.port,
          degradedLatencyMs: durationMs(tcp.degraded_latency),
        },
      };
    }
    case 'database':
      return { type, settings: resolveDatabase(raw as RawDatabaseSettings, at, report) };
    case 'tailscale':
      return { type, settings: { socket: (raw as RawTailscaleSettings).socket } };
    case 'docker': {
      const docker = raw as RawDockerSettings;
      return {
        type,
        settings: {
          socket: docker.socket,
          containers: (docker.containers ?? []).map((name) => name.replace(/^\//, '')),
          maxRestarts: docker.max_restarts,
        },
      };
    }
    case 'workers': {
      const workers = raw as RawWorkersSettings;
      return {
        type,
        settings: {
          staleAfterMs: durationMs(workers.stale_after) ?? DEFAULT_STALE_AFTER_MS,
          minOnline: workers.min_online ?? 1,
        },
      };
    }
    case 'queue': {
      const queue = raw as RawQueueSettings;
      return {
        type,
        settings: { maxWaitMs: durationMs(queue.max_wait) ?? DEFAULT_MAX_WAIT_MS },
      };
    }
  }
}

function checkUrl(url: string, at: (string | number)[], report: Report): void {
  try {
    new URL(url);
  } catch {
    report(at, `"${url}" is not a valid URL`);
  }
}

function resolveDatabase(
  raw: RawDatabaseSettings,
  at: (string | number)[],
  report: Report,
): DatabaseCheckSettings {
  const diskWarn = parseFreeSpace(raw.disk_warn ?? '10%');
  const diskFail = parseFreeSpace(raw.disk_fail ?? '5%');
  if ('percent' in diskWarn && diskWarn.percent > 100) {
    report([...at, 'disk_warn'], 'must be a percentage of 100% or less');
  }
  if ('percent' in diskFail && diskFail.percent > 100) {
    report([...at, 'disk_fail'], 'must be a percentage of 100% or less');
  }
  if (
    ('percent' in diskWarn && 'percent' in diskFail && diskFail.percent > diskWarn.percent) ||
    ('bytes' in diskWarn && 'bytes' in diskFail && diskFail.bytes > diskWarn.bytes)
  ) {
    report([...at, 'disk_fail'], 'must not be larger than disk_warn');
  }
  return {
    query: raw.query ?? 'SELECT 1',
    integrityIntervalMs: durationMs(raw.integrity_interval) ?? DEFAULT_INTEGRITY_INTERVAL_MS,
    diskWarn,
    diskFail,
    degradedLatencyMs: durationMs(raw.degraded_latency),
    walWarnBytes: raw.wal_warn === undefined ? WAL_DEGRADED_BYTES : parseSize(raw.wal_warn),
  };
}

/** The fields of a heal that name what it acts on. */
const TARGET_FIELDS = [
  'container',
  'job_type',
  'procedure',
  'commit',
  'commit_from_state',
  'branch',
  'params',
] as const;

/** The target fields each action reads (see runAction in src/health/heal.ts). */
const ACTION_FIELDS: Record<string, readonly string[] | undefined> = {
  restart_container: ['container'],
  trigger_job: ['job_type', 'commit', 'commit_from_state', 'branch', 'params'],
  recovery_procedure: ['procedure', 'commit', 'commit_from_state', 'branch', 'params'],
};

/**
 * Checks a heal and fills in its defaults. `raw` comes without the fields that failed the
 * schema, so a field counts as missing only when `failed` does not name it.
 */
function resolveHeal(
  raw: RawHeal,
  thresholds: HealthThresholds,
  known: Known,
  at: (string | number)[],
  report: Report,
  failed: FailedFields,
): HealAction {
  const missing = (field: keyof RawHeal) =>
    raw[field] === undefined && !failed.within([...at, field]);
  if (raw.action === 'restart_container' && missing('container')) {
    report([...at, 'container'], 'is required for the restart_container action');
  }
  if (raw.action === 'trigger_job') {
    if (missing('job_type')) {
      report([...at, 'job_type'], 'is required for the trigger_job action');
    } else if (raw.job_type !== undefined && !(raw.job_type in known.pipelines)) {
      report([...at, 'job_type'], `unknown job type "${raw.job_type}"`);
    }
    if (raw.commit !== undefined && raw.commit_from_state !== undefined) {
      report([...at, 'commit_from_state'], 'give either commit or commit_from_state, not both');
    }
    // A worker checks out a job only when it has a commit, and otherwise runs the steps in an
    // empty workspace without failing the task.
    if (known.repository !== undefined && missing('commit') && missing('commit_from_state')) {
      report(
        at,
        "triggers a job with no commit, whose tasks check nothing out of the file's " +
          'repository and start in an empty workspace; set commit or commit_from_state',
      );
    }
  }
  for (const name of Object.keys(raw.params ?? {})) {
    // The same rule as a trigger's params: each reaches the job's steps as SLIPWAY_PARAM_<NAME>.
    if (name.length < 1 || name.length > MAX_PARAM_NAME_LENGTH) {
      report(
        [...at, 'params'],
        `has a param named ${JSON.stringify(name.slice(0, 40))}; a param name must be 1 to ` +
          `${MAX_PARAM_NAME_LENGTH} characters, which reaches the steps as SLIPWAY_PARAM_<NAME>`,
      );
    }
  }
  const used = ACTION_FIELDS[raw.action];
  for (const field of TARGET_FIELDS) {
    if (used !== undefined && raw[field] !== undefined && !used.includes(field)) {
      report([...at, field], `is not used by the ${raw.action} action; remove it`);
    }
  }
  if (raw.action === 'recovery_procedure') {
    if (missing('procedure')) {
      report([...at, 'procedure'], 'is required for the recovery_procedure action');
    } else if (raw.procedure !== undefined && !(raw.procedure in known.recovery)) {
      report([...at, 'procedure'], `unknown recovery procedure "${raw.procedure}"`);
    }
  }
  return {
    action: raw.action,
    container: raw.container?.replace(/^\//, ''),
    jobType: raw.job_type,
    commit: raw.commit,
    commitFromState: raw.commit_from_state,
    branch: raw.branch,
    procedure: raw.procedure,
    params: raw.params ?? {},
    after: raw.after ?? thresholds.down,
    cooldownMs: durationMs(raw.cooldown) ?? DEFAULT_COOLDOWN_MS,
    maxPerHour: raw.max_per_hour ?? DEFAULT_MAX_PER_HOUR,
  };
}

const SIZE_FACTORS: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
const BINARY_FACTORS: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Parses `10%`, `500MB` (powers of 1000), `2GiB` (powers of 1024) or a byte count. */
export function parseFreeSpace(value: string | number): FreeSpaceLimit {
  if (typeof value === 'number') return { bytes: value };
  const percent = /^(\d+(?:\.\d+)?)%$/.exec(value);
  if (percent !== null) return { percent: Number(percent[1]) };
  return { bytes: parseSize(value) };
}

/** Returns the bytes of a size such as 500MB or 2GiB that the schema has checked. */
export function parseSize(value: string | number): number {
  if (typeof value === 'number') return value;
  const size = /^(\d+(?:\.\d+)?)\s*(?:([kKmMgGtT])(i?))?[bB]?$/.exec(value)!;
  const unit = (size[2] ?? '').toLowerCase();
  const factor = size[3] === 'i' ? BINARY_FACTORS[unit]! : SIZE_FACTORS[unit]!;
  return Math.round(Number(size[1]) * factor);
}

function durationMs(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return value * 1000;
  return parseDuration(value);
}
