/**
 * The docker executor: one container per task, through the Docker Engine API (dockerode),
 * at DOCKER_HOST or /var/run/docker.sock. The workspace is mounted at /workspace and a
 * generated script at /slipway runs the steps in order, stopping at the first that fails.
 * Containers get memory, CPU and PID limits, the labels of src/jobs/labels.ts, no Docker
 * socket, the pipeline's network mode and user, and are removed afterwards. A missing image is
 * an `error`: the executor never pulls, because the worker's host may reach no registry. An
 * image in which run.sh never starts (no /bin/sh) is an `error` too, because no step ran. So is
 * a container that the engine killed on a request Slipway did not send (container-kills.ts).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { LABEL_TASK } from '../jobs/labels.js';
import { engineKillSignals, KillWatch } from './container-kills.js';
import {
  DEFAULT_ENGINE_TIMEOUT_MS,
  EngineFailure,
  engineCall,
  formatSeconds,
} from './engine-calls.js';
import { resolveContainerUser } from './container-user.js';
import { isImageReference } from './image-reference.js';
import {
  ExecutionError,
  stepHeader,
  type ExecutionResult,
  type ExecutionSpec,
  type Executor,
  type OutputSink,
} from './executor.js';

const WORKSPACE_MOUNT = '/workspace';
const SCRIPT_MOUNT = '/slipway';
/** File that run.sh writes first, in the script directory, to show that a shell ran it. */
const STARTED_MARKER = 'started';
/** File that run.sh writes the failing step's name to, in the script directory. */
const FAILED_STEP_FILE = 'failed-step';
/** File that run.sh writes each step's name to before the step starts, in the script directory. */
const RUNNING_STEP_FILE = 'running-step';
/**
 * Milliseconds the engine gets to respond to the wait after the container's output stream
 * ended. After that the executor inspects the container instead.
 */
const STREAM_END_GRACE_MS = 2_000;
/**
 * Milliseconds a container may still be reported running after its output stream ended,
 * before the executor takes the end for a broken connection.
 */
const RUNNING_AFTER_STREAM_MS = 10_000;
/** Milliseconds the engine gets to respond to the check after a failure (see unavailable). */
const PROBE_TIMEOUT_MS = 5_000;
/** Milliseconds the kill check waits for the container's `die` event after its exit. */
const DIE_EVENT_WAIT_MS = 2_000;
/** Limits for pipelines that set none; a runaway test must not take the host down. */
export const DEFAULT_MEMORY_BYTES = 4 * 1024 ** 3;
export const DEFAULT_PIDS = 4096;

export function dockerClient(dockerHost: string | undefined): Docker {
  if (dockerHost === undefined) return new Docker({ socketPath: '/var/run/docker.sock' });
  const url = new URL(dockerHost);
  if (url.protocol === 'unix:') return new Docker({ socketPath: url.pathname });
  return new Docker({
    host: url.hostname,
    port: Number(url.port || 2375),
    protocol: url.protocol === 'https:' ? 'https' : 'http',
  });
}

/** Name of the task attempt's container. */
export function containerName(spec: Pick<ExecutionSpec, 'taskId' | 'attempt'>): string {
  return `slipway-${spec.taskId.replace(/[^a-zA-Z0-9_.-]/g, '-')}-a${spec.attempt}`;
}

export class DockerExecutor implements Executor {
  readonly name = 'docker' as const;
  /** Milliseconds an engine request may take; see engine-calls.ts. */
  readonly #timeoutMs: number;
  /** The message of the last engine failure, until the engine responds again. */
  #engineFailure: string | undefined;
  readonly #unavailableListeners: Array<() => void> = [];

  constructor(
    readonly docker: Docker,
    options: { timeoutMs?: number } = {},
  ) {
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_ENGINE_TIMEOUT_MS;
  }

  async run(
    spec: ExecutionSpec,
    output: OutputSink,
    signal: AbortSignal,
  ): Promise<ExecutionResult> {
    return this.#noteEngineFailure(() => this.#run(spec, output, signal));
  }

  async cleanup(spec: ExecutionSpec): Promise<void> {
    return this.#noteEngineFailure(() => this.#cleanup(spec));
  }

  /**
   * Returns why the engine cannot run tasks now, or undefined. After an engine failure, each
   * call lists one container until the engine responds within PROBE_TIMEOUT_MS.
   */
  async unavailable(): Promise<string | undefined> {
    if (this.#engineFailure === undefined) return undefined;
    try {
      await engineCall(
        'a request for its containers',
        Math.min(this.#timeoutMs, PROBE_TIMEOUT_MS),
        (abortSignal) => this.docker.listContainers({ limit: 1, abortSignal }),
      );
    } catch (error) {
      return engineMessage(error);
    }
    this.#engineFailure = undefined;
    return undefined;
  }

  onUnavailable(listener: () => void): void {
    this.#unavailableListeners.push(listener);
  }

  async #noteEngineFailure<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof EngineFailure || isUnreachable(error)) {
        this.#engineFailure = (error as Error).message;
        for (const listener of this.#unavailableListeners) listener();
      }
      throw error;
    }
  }

  async #run(
    spec: ExecutionSpec,
    output: OutputSink,
    signal: AbortSignal,
  ): Promise<ExecutionResult> {
    if (spec.image === null) {
      throw new ExecutionError('the pipeline names no image, and the docker executor needs one');
    }
    if (!isImageReference(spec.image)) {
      // The name goes into the Docker Engine API's request path, so it must not reach it.
      throw new ExecutionError(
        `image ${JSON.stringify(spec.image)} is not a valid Docker image reference; ` +
          "check the job type's image and the matrix values that fill it",
      );
    }
    await this.#requireImage(spec.image);
    const script = await writeStepScript(spec);
    if (signal.aborted) return { exitCode: 130 };

    const name = containerName(spec);
    const container = await engineCall(
      'the request to create the container',
      this.#timeoutMs,
      (abortSignal) =>
        this.docker.createContainer({ ...containerOptions(spec, script), abortSignal }),
    ).catch((error: unknown) => {
      if (error instanceof ExecutionError) throw error;
      throw new ExecutionError(`could not create the container: ${engineMessage(error)}`, {
        cause: error,
      });
    });
    // Opened before the start, so that it receives every kill event. Without it, the kill
    // check falls back to the engine's list of recent events.
    // NOTE: on a hung engine this waits the whole limit before the next request waits its own,
    // so the first failure of a task takes two limits.
    const kills = await KillWatch.start(this.docker, container.id, this.#timeoutMs, signal).catch(
      () => undefined,
    );
    // A task stopped before the start ends without it. The worker's cleanup removes the
    // container, which never ran.
    if (signal.aborted) {
      kills?.close();
      return { exitCode: 130 };
    }
    // Once the task is stopped, the engine gets this long to confirm that the container
    // exited, so that a hung engine cannot hold the task forever.
    const stopDeadline = new AbortController();
    let deadlineTimer: NodeJS.Timeout | undefined;
    const kill = () => {
      container.kill({ abortSignal: AbortSignal.timeout(this.#timeoutMs) }).catch(() => undefined);
    };
    const stop = () => {
      kill();
      deadlineTimer ??= setTimeout(() => stopDeadline.abort(), this.#timeoutMs);
    };
    signal.addEventListener('abort', stop, { once: true });
    if (signal.aborted) stop();
    try {
      // The stream ends early when the stop deadline passes, so that a hung engine keeps no request open.
      const stream = await engineCall(
        'the request to attach to the container',
        this.#timeoutMs,
        (abortSignal) =>
          container.attach({ stream: true, stdout: true, stderr: true, abortSignal }),
        stopDeadline.signal,
      );
      const sink = new PassThrough();
      sink.on('data', (chunk: Buffer) => output.write(chunk));
      container.modem.demuxStream(stream, sink, sink);
      const streamEnded = new Promise<void>((resolve) => {
        stream.once('end', resolve);
        stream.once('close', resolve);
        stream.once('error', () => resolve());
      });
      await engineCall(
        'the request to start the container',
        this.#timeoutMs,
        (abortSignal) => container.start({ abortSignal }),
        stopDeadline.signal,
      ).catch((error: unknown) => {
        // The engine may have received the start without responding, so the steps may run.
        if (error instanceof ExecutionError) throw withStepMayRun(error);
        if (stopDeadline.signal.aborted) throw engineStopError(name, this.#timeoutMs, error);
        throw new ExecutionError(`could not start the container: ${engineMessage(error)}`, {
          cause: error,
        });
      });
      // A kill sent before the start found no running container.
      if (signal.aborted) kill();
      const exitCode = await this.#waitForExit(container, name, stopDeadline.signal, streamEnded);
      await Promise.race([streamEnded, new Promise((resolve) => setTimeout(resolve, 2_000))]);
      if (exitCode === 0 || signal.aborted) return { exitCode };
      if (!(await scriptStarted(spec))) throw scriptNotStartedError(spec.image, exitCode);
      const oomKilled = await this.#wasOomKilled(container);
      let failedStep = await readMarker(spec, FAILED_STEP_FILE);
      let detail: string | undefined;
      if (failedStep === undefined && exitCode > 128) {
        // run.sh itself was killed, so it recorded no failing step: the step it ran is named.
        failedStep = await readMarker(spec, RUNNING_STEP_FILE);
        // Running out of memory is the step's `failure` (see docs/execution.md), so only a
        // container that did not is checked for a kill from outside.
        if (!oomKilled) {
          detail = await this.#checkKilledScript(container.id, exitCode, failedStep, kills);
        }
      }
      if (oomKilled) {
        return {
          exitCode,
          failedStep,
          detail: `the container ran out of memory (limit ${spec.resources.memory ?? DEFAULT_MEMORY_BYTES} bytes)`,
        };
      }
      return { exitCode, failedStep, ...(detail === undefined ? {} : { detail }) };
    } finally {
      signal.removeEventListener('abort', stop);
      clearTimeout(deadlineTimer);
      kills?.close();
    }
  }

  /**
   * Waits for the container to exit and returns its exit code. The wait has no time limit while
   * the steps run (the task's timeout stops them), but ends once `stopDeadline` fires. A wait
   * request whose connection breaks (the engine restarted) never gets a response, so the end
   * of the output stream, which closes with the container or the connection, is watched too.
   * After the deadline or a broken connection the steps may still run, and the error states that.
   */
  async #waitForExit(
    container: Docker.Container,
    name: string,
    stopDeadline: AbortSignal,
    streamEnded: Promise<void>,
  ): Promise<number> {
    const waitAbort = new AbortController();
    const abortSignal = AbortSignal.any([stopDeadline, waitAbort.signal]);
    try {
      const waited = container.wait({ abortSignal }).then(
        (result: { StatusCode: number }) => ({ exitCode: result.StatusCode }),
        (error: unknown) => ({ error }),
      );
      const streamGone = streamEnded
        .then(() => new Promise((resolve) => setTimeout(resolve, STREAM_END_GRACE_MS)))
        .then(() => 'stream ended' as const);
      const first = await Promise.race([waited, streamGone]);
      if (first === 'stream ended') return await this.#exitAfterStreamEnded(container, name);
      if ('exitCode' in first) return first.exitCode;
      if (stopDeadline.aborted) throw engineStopError(name, this.#timeoutMs, first.error);
      throw lostConnectionError(name, engineMessage(first.error), first.error);
    } finally {
      waitAbort.abort();
    }
  }

  /**
   * Inspects a container whose output stream ended before the engine responded to the wait,
   * and returns its exit code. Either it exited and the engine has not recorded it yet, or the
   * connection broke while it still ran. A container that stays running for
   * RUNNING_AFTER_STREAM_MS more is taken for the second.
   */
  async #exitAfterStreamEnded(container: Docker.Container, name: string): Promise<number> {
    const deadline = Date.now() + RUNNING_AFTER_STREAM_MS;
    for (;;) {
      let state: Docker.ContainerInspectInfo['State'];
      try {
        state = (
          await engineCall('the inspection of the container', this.#timeoutMs, (abortSignal) =>
            container.inspect({ abortSignal }),
          )
        ).State;
      } catch (error) {
        throw lostConnectionError(name, engineMessage(error), error);
      }
      if (!state.Running) return state.ExitCode;
      if (Date.now() >= deadline) {
        throw lostConnectionError(name, 'its output stream closed while it still ran', undefined);
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  async #wasOomKilled(container: Docker.Container): Promise<boolean> {
    return engineCall('the inspection of the exited container', this.#timeoutMs, (abortSignal) =>
      wasOomKilled(container, abortSignal),
    );
  }

  /**
   * Throws an ExecutionError, which ends the task `error`, when the engine recorded a kill of
   * the container with the signal that killed run.sh: a kill from outside, which the task's
   * `retries` may run again. Slipway's own kill (cancel, timeout) never reaches this, because an
   * aborted run returns before. Otherwise returns the detail for the step's `failure`.
   */
  async #checkKilledScript(
    containerId: string,
    exitCode: number,
    step: string | undefined,
    watch: KillWatch | undefined,
  ): Promise<string> {
    const signal = exitCode - 128;
    let kills = await watch?.signalsAfterExit(DIE_EVENT_WAIT_MS);
    try {
      kills ??= await engineKillSignals(this.docker, containerId, this.#timeoutMs);
    } catch (error) {
      return (
        `the step script was killed by ${signalName(signal)} while this step ran, and reading ` +
        `the Docker engine's events failed (${engineMessage(error)}), so it is unknown whether ` +
        'the container was killed from outside or a process of the step signalled its script'
      );
    }
    if (kills.includes(signal)) {
      const during = step === undefined ? 'before the first step' : `during step "${step}"`;
      throw new ExecutionError(
        `the container was killed from outside by ${signalName(signal)} ${during} ` +
          `(exit code ${exitCode}), with a kill that the Docker engine recorded and Slipway ` +
          'did not send, such as docker kill, docker stop, docker rm -f or the engine stopping',
        { exitCode },
      );
    }
    return (
      `the step script was killed by ${signalName(signal)} while this step ran, and the Docker ` +
      'engine recorded no kill of the container with that signal, so a process in the ' +
      'container (or one on the host that bypassed the engine) sent it'
    );
  }

  async #cleanup(spec: ExecutionSpec): Promise<void> {
    // A short limit after an engine failure, so that a stopping worker does not wait the full
    // limit again for each request. The worker retries a cleanup that fails.
    const timeoutMs =
      this.#engineFailure === undefined
        ? this.#timeoutMs
        : Math.min(this.#timeoutMs, PROBE_TIMEOUT_MS);
    const containers = await engineCall(
      "the listing of the task's containers",
      timeoutMs,
      (abortSignal) =>
        this.docker.listContainers({
          all: true,
          filters: { label: [`${LABEL_TASK}=${spec.taskId}`] },
          abortSignal,
        }),
    );
    for (const info of containers) {
      await engineCall(`the removal of container ${info.Id}`, timeoutMs, (abortSignal) =>
        this.docker.getContainer(info.Id).remove({ force: true, v: true, abortSignal }),
      ).catch((error: { statusCode?: number }) => {
        if (error.statusCode !== 404 && error.statusCode !== 409) throw error;
      });
    }
  }

  async #requireImage(image: string): Promise<void> {
    try {
      await engineCall('the lookup of the image', this.#timeoutMs, (abortSignal) =>
        inspectImage(this.docker, image, abortSignal),
      );
    } catch (error) {
      if (error instanceof ExecutionError) throw error;
      if ((error as { statusCode?: number }).statusCode === 404) {
        throw new ExecutionError(
          `image ${image} not found on the Docker engine; build or load it on the worker's host`,
        );
      }
      throw new ExecutionError(`the Docker engine failed: ${engineMessage(error)}`, {
        cause: error,
      });
    }
  }
}

/**
 * Inspects an image, as dockerode's Image.inspect does, but with an abort signal, which that
 * method drops (dockerode 4.0.12). Without it, a request to a hung engine would stay open and
 * keep the process from exiting.
 */
function inspectImage(docker: Docker, image: string, abortSignal: AbortSignal): Promise<unknown> {
  const modem = docker.modem as unknown as {
    dial(options: Record<string, unknown>, callback: (error: unknown, data: unknown) => void): void;
  };
  return new Promise((resolve, reject) => {
    modem.dial(
      {
        path: `/images/${image}/json`,
        method: 'GET',
        abortSignal,
        statusCodes: { 200: true, 404: 'no such image', 500: 'server error' },
      },
      (error, data) => (error === null || error === undefined ? resolve(data) : reject(error)),
    );
  });
}

function containerOptions(spec: ExecutionSpec, scriptDir: string): Docker.ContainerCreateOptions {
  const cpus = spec.resources.cpus;
  const user = resolveContainerUser(spec.user);
  return {
    name: containerName(spec),
    Image: spec.image!,
    // The image's own ENTRYPOINT would receive the script as its arguments and could exit 0
    // without running a step, so it is replaced.
    Entrypoint: ['/bin/sh'],
    Cmd: [`${SCRIPT_MOUNT}/run.sh`],
    Env: Object.entries(spec.env).map(([name, value]) => `${name}=${value}`),
    WorkingDir: WORKSPACE_MOUNT,
    ...(user === undefined ? {} : { User: user }),
    Labels: spec.labels,
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    OpenStdin: false,
    HostConfig: {
      Binds: [`${spec.workspace}:${WORKSPACE_MOUNT}`, `${scriptDir}:${SCRIPT_MOUNT}`],
      Memory: spec.resources.memory ?? DEFAULT_MEMORY_BYTES,
      // Swap counts against the limit too, so the limit is the real ceiling.
      MemorySwap: spec.resources.memory ?? DEFAULT_MEMORY_BYTES,
      ...(cpus === undefined ? {} : { NanoCpus: Math.round(cpus * 1e9) }),
      PidsLimit: spec.resources.pids ?? DEFAULT_PIDS,
      ...(spec.network === null ? {} : { NetworkMode: spec.network }),
      AutoRemove: false,
      Init: true,
      SecurityOpt: ['no-new-privileges'],
    },
  };
}

/**
 * Writes run.sh and one file per step into the scratch directory. Step commands are copied
 * as files, never pasted into another command line, so no quoting can change them.
 *
 * The container runs as the pipeline's `user` or else the image's USER, which may be any uid.
 * So the directory and the scripts are readable by everyone, and the two files that run.sh
 * writes (`started` and `failed-step`) are created here, empty and writable by everyone.
 */
async function writeStepScript(spec: ExecutionSpec): Promise<string> {
  const dir = path.join(spec.scratch, 'docker');
  await fs.mkdir(dir, { recursive: true });
  await fs.chmod(dir, 0o755);
  await writeFileWithMode(path.join(dir, STARTED_MARKER), '', 0o666);
  await writeFileWithMode(path.join(dir, FAILED_STEP_FILE), '', 0o666);
  await writeFileWithMode(path.join(dir, RUNNING_STEP_FILE), '', 0o666);
  // The engine keeps no order between a container's stdout and stderr, so stderr goes into
  // stdout here and the log keeps the order in which the steps wrote.
  const lines = [
    '#!/bin/sh',
    '# Generated by Slipway: runs the steps in order.',
    `echo started > ${SCRIPT_MOUNT}/${STARTED_MARKER}`,
    'exec 2>&1',
    '',
  ];
  for (const [index, step] of spec.steps.entries()) {
    await writeFileWithMode(path.join(dir, `step-${index + 1}.sh`), `${step.run}\n`, 0o644);
    const header = stepHeader(index, spec.steps.length, step);
    lines.push(
      `printf '%s' ${shellQuote(step.name)} > ${SCRIPT_MOUNT}/${RUNNING_STEP_FILE}`,
      `printf '%s\\n' ${shellQuote(header)}`,
      `/bin/sh ${SCRIPT_MOUNT}/step-${index + 1}.sh`,
      'code=$?',
      'if [ "$code" -ne 0 ]; then',
      `  printf '%s\\n' ${shellQuote(`[slipway] step "${step.name}" exited with code`)}" $code"`,
      `  printf '%s' ${shellQuote(step.name)} > ${SCRIPT_MOUNT}/${FAILED_STEP_FILE}`,
      '  exit "$code"',
      'fi',
    );
  }
  lines.push('exit 0', '');
  await writeFileWithMode(path.join(dir, 'run.sh'), lines.join('\n'), 0o644);
  return dir;
}

/** Writes a file and sets its mode, which the process umask would otherwise narrow. */
async function writeFileWithMode(file: string, content: string, mode: number): Promise<void> {
  await fs.writeFile(file, content);
  await fs.chmod(file, mode);
}

/**
 * Returns what run.sh wrote into one of its marker files in the scratch directory, such as the
 * name of the step that failed, or undefined when it wrote nothing there.
 */
async function readMarker(spec: ExecutionSpec, file: string): Promise<string | undefined> {
  const text = await fs.readFile(path.join(spec.scratch, 'docker', file), 'utf8').catch(() => '');
  return text === '' ? undefined : text;
}

/** Returns the name of a signal number, such as SIGKILL for 9. */
function signalName(signal: number): string {
  const name = Object.entries(os.constants.signals).find(([, number]) => number === signal)?.[0];
  return name ?? `signal ${signal}`;
}

/**
 * Reports whether the kernel's OOM killer killed a process of the exited container. A
 * container that is gone already (`docker rm -f`) reports false, because its state is lost.
 */
async function wasOomKilled(
  container: Docker.Container,
  abortSignal: AbortSignal,
): Promise<boolean> {
  try {
    return (await container.inspect({ abortSignal })).State.OOMKilled;
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return false;
    throw error;
  }
}

/** Marks an error of an engine request as one after which the steps may still run. */
function withStepMayRun(error: ExecutionError): ExecutionError {
  if (error.stepMayRun) return error;
  const Failure = error instanceof EngineFailure ? EngineFailure : ExecutionError;
  return new Failure(`${error.message}; the container may have started`, {
    cause: error.cause,
    stepMayRun: true,
    ...(error.exitCode === null ? {} : { exitCode: error.exitCode }),
  });
}

/** Builds the error for a run whose connection to the engine broke while the container ran. */
function lostConnectionError(name: string, detail: string, cause: unknown): ExecutionError {
  return new EngineFailure(
    `lost the connection to the Docker engine while container ${name} ran (${detail}); ` +
      'its steps may still run, so the worker removes it',
    { cause, stepMayRun: true },
  );
}

/** Builds the error for an engine that did not confirm, after a stop, that the container exited. */
function engineStopError(name: string, timeoutMs: number, cause: unknown): ExecutionError {
  return new EngineFailure(
    `the Docker engine did not confirm within ${formatSeconds(timeoutMs)} that container ` +
      `${name} stopped after Slipway stopped the task; its steps may still run, so the worker ` +
      'removes it once the engine responds',
    { cause, stepMayRun: true },
  );
}

/** Reports whether run.sh wrote its first line, which shows that a shell ran it. */
async function scriptStarted(spec: ExecutionSpec): Promise<boolean> {
  return (await readMarker(spec, STARTED_MARKER)) !== undefined;
}

/**
 * Builds the error for a container that exited before run.sh started, so no step ran. The
 * init process (tini) exits with code 127 when it cannot find /bin/sh in the image.
 */
function scriptNotStartedError(image: string | null, exitCode: number): ExecutionError {
  if (exitCode === 127) {
    return new ExecutionError(
      `image ${image} has no /bin/sh, which the docker executor runs the steps with ` +
        '(the container exited with code 127 before any step ran); use an image that contains /bin/sh',
    );
  }
  return new ExecutionError(
    `the step script ${SCRIPT_MOUNT}/run.sh did not start in image ${image} ` +
      `(the container exited with code ${exitCode} before any step ran); ` +
      "check that the image's /bin/sh runs and that the container's user can read " +
      SCRIPT_MOUNT,
  );
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * Error codes of a connection to the engine that failed: as while dockerd restarts, or, for a
 * DOCKER_HOST over TCP, a host that cannot be reached.
 */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOENT',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

/**
 * Tells whether `error`, or the engine error it wraps, is a connection to the engine that
 * could not be made or broke, rather than a response. Such requests fail at once, so without
 * this a worker whose engine is down would fail every queued docker task and its retries.
 */
function isUnreachable(error: unknown): boolean {
  for (const candidate of [error, (error as { cause?: unknown } | undefined)?.cause]) {
    const { code, syscall, statusCode } = (candidate ?? {}) as {
      code?: string;
      syscall?: string;
      statusCode?: number;
    };
    if (statusCode !== undefined || code === undefined || !UNREACHABLE_CODES.has(code)) continue;
    // A missing file elsewhere (the step script) is no engine problem.
    if (code === 'ENOENT' && syscall !== 'connect') continue;
    return true;
  }
  return false;
}

function engineMessage(error: unknown): string {
  const json = (error as { json?: { message?: string } }).json;
  return json?.message ?? (error as Error).message ?? String(error);
}
