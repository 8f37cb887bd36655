/**
 * The pipeline file after validation: every default filled in and every duration in
 * milliseconds. A job stores the Pipeline it was created with, so editing the file
 * does not change jobs already queued.
 */

export type ExecutorName = 'docker' | 'local';

export interface Step {
  name: string;
  run: string;
}

/** One matrix axis: values come from a trigger body field when present, else the defaults. */
export interface MatrixAxis {
  name: string;
  /** Trigger body field (top level or under `params`) that supplies the values. */
  from: string | undefined;
  values: string[];
}

/** A secret exposed to steps as an environment variable and masked in logs. */
export interface SecretRef {
  /** Environment variable name inside the step. */
  name: string;
  /** Read from this environment variable of the worker. */
  fromEnv: string | undefined;
  /** Or read from this file on the worker's host. */
  fromFile: string | undefined;
}

export interface Concurrency {
  /** Template of the group key: `${{ branch }}`, `${{ commit }}` or any fixed text. */
  group: string;
  cancelInProgress: boolean;
}

export interface Resources {
  /** Bytes. */
  memory: number | undefined;
  cpus: number | undefined;
  pids: number | undefined;
}

export interface Pipeline {
  type: string;
  executor: ExecutorName | undefined;
  image: string | undefined;
  steps: Step[];
  matrix: MatrixAxis[];
  env: Record<string, string>;
  secrets: SecretRef[];
  timeoutMs: number;
  /** Extra attempts after an `error` (infrastructure) outcome; failures are never retried. */
  retries: number;
  /**
   * Whether running the pipeline twice could do harm (a deploy). Such tasks are not
   * re-queued when a lease expires; they end as `error` instead.
   */
  sideEffects: boolean;
  concurrency: Concurrency | undefined;
  needs: string[];
  /** Trigger missing dependencies instead of waiting for them. */
  triggerNeeds: boolean;
  dependencyTimeoutMs: number | undefined;
  network: string | undefined;
  /**
   * User of the task's container (docker executor only): a Docker user spec such as `1000:1000`
   * or `app`, or `worker` for the worker process's uid and gid, resolved on the worker. Undefined
   * keeps the image's USER.
   */
  user: string | undefined;
  resources: Resources;
  onSuccess: {
    /** State variable name to value template (`${{ commit }}`, `${{ branch }}`, text). */
    state: Record<string, string>;
  };
}

export type RecoveryAction = 'restart_container' | 'rerun_failed' | 'run_pipeline';

export interface RecoveryProcedure {
  name: string;
  action: RecoveryAction;
  container: string | undefined;
  pipeline: string | undefined;
  description: string | undefined;
}

export type HealthCheckType =
  'http' | 'tcp' | 'database' | 'tailscale' | 'docker' | 'workers' | 'queue';

/**
 * Hysteresis of a component's status: how many results in a row change it. A result is
 * failing when the probe returns `unhealthy`; `healthy` and `degraded` results are passing.
 */
export interface HealthThresholds {
  /** Failing results in a row before a healthy or degraded component becomes unhealthy. */
  down: number;
  /** Passing results in a row before an unhealthy component counts as up again. */
  up: number;
}

export type HealActionName = 'restart_container' | 'trigger_job' | 'recovery_procedure';

/** A self-healing action, taken when a check keeps failing, limited by cooldown and cap. */
export interface HealAction {
  action: HealActionName;
  /** Container to restart (restart_container). */
  container: string | undefined;
  /** Job type to trigger (trigger_job). */
  jobType: string | undefined;
  /** Commit for the triggered job: a fixed SHA, or the value of a state variable. */
  commit: string | undefined;
  commitFromState: string | undefined;
  branch: string | undefined;
  /** Recovery procedure to run (recovery_procedure). */
  procedure: string | undefined;
  /** Trigger params for trigger_job, procedure params for recovery_procedure. */
  params: Record<string, unknown>;
  /** Failing results in a row before acting; defaults to thresholds.down. */
  after: number;
  /** Minimum time between two actions for this check. */
  cooldownMs: number;
  /** Actions allowed in any sliding hour; further ones are suppressed and audited. */
  maxPerHour: number;
}

export interface HttpCheckSettings {
  url: string;
  method: 'GET' | 'HEAD';
  /** Accepted status codes; undefined accepts any 2xx or 3xx. */
  expectStatus: number[] | undefined;
  /** Text the body must contain. */
  expectBody: string | undefined;
  headers: Record<string, string>;
  /** Above this latency a passing result counts as degraded. */
  degradedLatencyMs: number | undefined;
}

export interface TcpCheckSettings {
  host: string;
  port: number;
  degradedLatencyMs: number | undefined;
}

/** Free space: a byte count, or a fraction of the file system's size. */
export type FreeSpaceLimit = { bytes: number } | { percent: number };

export interface DatabaseCheckSettings {
  query: string;
  /** How often `PRAGMA quick_check` runs; the result is reused in between. */
  integrityIntervalMs: number;
  /** Less free space than this makes the result degraded. */
  diskWarn: FreeSpaceLimit;
  /** Less free space than this makes the result unhealthy. */
  diskFail: FreeSpaceLimit;
  degradedLatencyMs: number | undefined;
  /** A write-ahead log larger than this makes the result degraded. */
  walWarnBytes: number;
}

export interface TailscaleCheckSettings {
  /** LocalAPI socket; undefined uses TAILSCALE_SOCKET. */
  socket: string | undefined;
}

export interface DockerCheckSettings {
  /** Engine socket; undefined uses DOCKER_HOST or /var/run/docker.sock. */
  socket: string | undefined;
  containers: string[];
  /** A container restarted more often than this within the last hour makes the result degraded. */
  maxRestarts: number | undefined;
}

export interface WorkersCheckSettings {
  /** A worker whose last heartbeat is older than this counts as stale. */
  staleAfterMs: number;
  /** Fewer workers with a recent heartbeat than this makes the result unhealthy. */
  minOnline: number;
}

export interface QueueCheckSettings {
  /** A task queued for longer than this makes the result degraded, or unhealthy when stuck. */
  maxWaitMs: number;
}

export type HealthCheckSettings =
  | { type: 'http'; settings: HttpCheckSettings }
  | { type: 'tcp'; settings: TcpCheckSettings }
  | { type: 'database'; settings: DatabaseCheckSettings }
  | { type: 'tailscale'; settings: TailscaleCheckSettings }
  | { type: 'docker'; settings: DockerCheckSettings }
  | { type: 'workers'; settings: WorkersCheckSettings }
  | { type: 'queue'; settings: QueueCheckSettings };

export type HealthCheckDefinition = HealthCheckSettings & {
  /** Component name: the key in /api/health/status and in health_metrics. */
  name: string;
  /** Time between runs; undefined uses HEALTH_CHECK_INTERVAL. */
  intervalMs: number | undefined;
  /** A run that takes longer is stopped and recorded as unhealthy. */
  timeoutMs: number;
  thresholds: HealthThresholds;
  heal: HealAction | undefined;
};

export interface PipelineFile {
  /** Absolute path of the file, or `(built-in)` for the shipped default. */
  source: string;
  repository: string | undefined;
  pipelines: Record<string, Pipeline>;
  recovery: Record<string, RecoveryProcedure>;
  healthChecks: HealthCheckDefinition[];
}
