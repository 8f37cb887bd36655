/**
 * `docker` check: the engine responds to requests, each named container is running and, where its image
 * defines a HEALTHCHECK, healthy. Restart counts are reported, and the restarts within the last
 * hour are compared with max_restarts.
 */
import Docker from 'dockerode';
import type { DockerCheckSettings } from '../../pipeline/types.js';
import { worstOf, type HealthState, type ProbeContext, type ProbeResult } from '../types.js';
import { countRecentRestarts, type RestartHistory } from './docker-restarts.js';

export function dockerClient(socket: string | undefined): Docker {
  // Without a socket, dockerode reads DOCKER_HOST and falls back to /var/run/docker.sock.
  return socket === undefined ? new Docker() : new Docker({ socketPath: socket });
}

interface ContainerReport {
  status: HealthState;
  reason: string | undefined;
  details: Record<string, unknown>;
  /** Restart samples to keep for the next run; undefined when the container is missing. */
  history?: RestartHistory;
}

export async function probeDocker(
  settings: DockerCheckSettings,
  context: ProbeContext,
): Promise<ProbeResult> {
  const docker = dockerClient(settings.socket);
  // The runner's timeout aborts the signal. A request left open on a hung engine would keep
  // its socket until the engine responds. dockerode's version() takes an abort signal, which
  // its types leave out.
  const withSignal = docker as unknown as {
    version(options: { abortSignal: AbortSignal }): Promise<Docker.DockerVersion>;
  };
  const version = await withSignal.version({ abortSignal: context.signal });
  const previousHistories = (context.memo.restart_history ?? {}) as Record<string, RestartHistory>;
  const histories: Record<string, RestartHistory> = {};
  const containers: Record<string, unknown> = {};
  const reports: ContainerReport[] = [];
  for (const name of settings.containers) {
    const report = await inspectContainer(docker, name, settings, previousHistories[name], context);
    reports.push(report);
    containers[name] = report.details;
    if (report.history !== undefined) histories[name] = report.history;
  }
  context.memo.restart_history = histories;

  const details = {
    engine: { version: version.Version, api_version: version.ApiVersion },
    containers,
  };
  const status = worstOf(reports.map((report) => report.status));
  const reasons = reports
    .filter((report) => report.status === status && report.reason !== undefined)
    .map((report) => report.reason);
  return { status, reason: reasons.join('; ') || undefined, details };
}

async function inspectContainer(
  docker: Docker,
  name: string,
  settings: DockerCheckSettings,
  previous: RestartHistory | undefined,
  context: ProbeContext,
): Promise<ContainerReport> {
  let info: Docker.ContainerInspectInfo;
  try {
    info = await docker.getContainer(name).inspect({ abortSignal: context.signal });
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) {
      return {
        status: 'unhealthy',
        reason: `container ${name} not found`,
        details: { state: 'missing' },
      };
    }
    throw error;
  }
  const recent = countRecentRestarts(previous, info.Id, info.RestartCount, Date.now());
  // The last sample is the count that the previous run saw.
  const previousCount = previous?.samples.at(-1)?.count;
  const report = judgeContainer(name, info, settings, recent.restarts, previousCount);
  return { ...report, history: recent.history };
}

/** Decides a running or stopped container's status from its inspect data. */
function judgeContainer(
  name: string,
  info: Docker.ContainerInspectInfo,
  settings: DockerCheckSettings,
  restartsLastHour: number,
  previousCount: number | undefined,
): ContainerReport {
  const state = info.State;
  const health = state.Health?.Status ?? null;
  const details = {
    id: info.Id.slice(0, 12),
    state: state.Status,
    health,
    restart_count: info.RestartCount,
    restarts_since_last_check:
      previousCount === undefined ? null : Math.max(0, info.RestartCount - previousCount),
    restarts_last_hour: restartsLastHour,
    started_at: state.StartedAt,
    finished_at: state.Status === 'running' ? null : state.FinishedAt,
    exit_code: state.Status === 'running' ? null : state.ExitCode,
  };
  if (state.Status !== 'running') {
    const exit = state.Status === 'exited' ? ` (exit code ${state.ExitCode})` : '';
    return {
      status: 'unhealthy',
      reason: `container ${name} is ${state.Status}${exit}`,
      details,
    };
  }
  if (health === 'unhealthy') {
    const lastLog = state.Health?.Log?.at(-1)?.Output?.trim().slice(0, 200);
    return {
      status: 'unhealthy',
      reason: `container ${name} fails its health check${lastLog ? `: ${lastLog}` : ''}`,
      details,
    };
  }
  if (health === 'starting') {
    return { status: 'degraded', reason: `container ${name} is still starting`, details };
  }
  if (settings.maxRestarts !== undefined && restartsLastHour > settings.maxRestarts) {
    return {
      status: 'degraded',
      reason: `container ${name} restarted ${restartsLastHour} times in the last hour, above max_restarts of ${settings.maxRestarts}`,
      details,
    };
  }
  return { status: 'healthy', reason: undefined, details };
}
