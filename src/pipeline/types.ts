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

export type HealthCheckType = 'http' | 'tcp' | 'database' | 'tailscale' | 'docker' | 'workers';

export interface HealAction {
  action: 'restart_container' | 'recovery';
  container: string | undefined;
  procedure: string | undefined;
  /** Consecutive unhealthy results before acting. */
  after: number;
  /** Consecutive healthy results before the component counts as recovered. */
  recoverAfter: number;
  cooldownMs: number;
  maxPerHour: number;
}

export interface HealthCheckDefinition {
  name: string;
  type: HealthCheckType;
  intervalMs: number | undefined;
  timeoutMs: number;
  /** Type-specific settings, validated by the health monitor's check for that type. */
  settings: Record<string, unknown>;
  heal: HealAction | undefined;
}

export interface PipelineFile {
  /** Absolute path of the file, or `(built-in)` for the shipped default. */
  source: string;
  repository: string | undefined;
  pipelines: Record<string, Pipeline>;
  recovery: Record<string, RecoveryProcedure>;
  healthChecks: HealthCheckDefinition[];
}
