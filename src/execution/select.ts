/**
 * Picks the worker's executors at start. With SLIPWAY_EXECUTOR=auto the default is `docker`
 * when an engine responds to a ping, else `local`. The worker logs which one it chose and why.
 */
import type { Config } from '../config/env.js';
import type { Logger } from '../log.js';
import { DockerExecutor, dockerClient } from './docker.js';
import type { Executor, ExecutorName } from './executor.js';
import { LocalExecutor } from './local.js';

export interface ExecutorSet {
  /** Executors by name; the first listed in `names` is the default. */
  byName: Map<ExecutorName, Executor>;
  names: ExecutorName[];
}

const PING_TIMEOUT_MS = 3_000;

export async function selectExecutors(config: Config, logger: Logger): Promise<ExecutorSet> {
  const local = new LocalExecutor(logger, config.workspacePath);
  const choice = config.worker.executor;
  const docker = dockerClient(config.worker.dockerHost);
  const engine = config.worker.dockerHost ?? 'unix:///var/run/docker.sock';
  let dockerProblem: string | undefined;
  // A ping left open on a hung engine would keep its socket, and so the process, alive.
  // dockerode's ping() takes an abort signal, which its types leave out.
  const pingAbort = new AbortController();
  const withSignal = docker as unknown as {
    ping(options: { abortSignal: AbortSignal }): Promise<unknown>;
  };
  try {
    await Promise.race([
      withSignal.ping({ abortSignal: pingAbort.signal }),
      new Promise((_resolve, reject) =>
        setTimeout(
          () => reject(new Error(`no response within ${PING_TIMEOUT_MS} ms`)),
          PING_TIMEOUT_MS,
        ).unref(),
      ),
    ]);
  } catch (error) {
    dockerProblem = (error as Error).message;
  } finally {
    pingAbort.abort();
  }

  const byName = new Map<ExecutorName, Executor>([['local', local]]);
  if (dockerProblem === undefined) {
    byName.set('docker', new DockerExecutor(docker, { timeoutMs: config.worker.dockerTimeoutMs }));
  }

  if (choice === 'docker' && dockerProblem !== undefined) {
    throw new Error(
      `SLIPWAY_EXECUTOR=docker but the Docker engine at ${engine} did not respond (${dockerProblem}); ` +
        'start the engine or set SLIPWAY_EXECUTOR=local',
    );
  }
  let names: ExecutorName[];
  if (choice === 'local') names = ['local'];
  else if (dockerProblem === undefined) names = ['docker', 'local'];
  else names = ['local'];

  const reason =
    choice !== 'auto'
      ? `SLIPWAY_EXECUTOR=${choice}`
      : dockerProblem === undefined
        ? `the Docker engine at ${engine} responded`
        : `the Docker engine at ${engine} did not respond (${dockerProblem})`;
  logger.info(
    { executor: names[0], executors: names, reason },
    `default executor is ${names[0]}: ${reason}`,
  );
  return { byName, names };
}
