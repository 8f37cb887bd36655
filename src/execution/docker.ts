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
import { engineKillSignals } from './container-kills.js';
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

  constructor(readonly docker: Docker) {}

  async run(
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

    const container = await this.docker
      .createContainer(containerOptions(spec, script))
      .catch((error: unknown) => {
        throw new ExecutionError(`could not create the container: ${engineMessage(error)}`, {
          cause: error,
        });
      });
    const stream = await container.attach({ stream: true, stdout: true, stderr: true });
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => output.write(chunk));
    container.modem.demuxStream(stream, sink, sink);
    const streamEnded = new Promise<void>((resolve) => {
      stream.once('end', resolve);
      stream.once('close', resolve);
      stream.once('error', () => resolve());
    });

    const kill = () => {
      container.kill().catch(() => undefined);
    };
    signal.addEventListener('abort', kill, { once: true });
    try {
      await container.start().catch((error: unknown) => {
        throw new ExecutionError(`could not start the container: ${engineMessage(error)}`, {
          cause: error,
        });
      });
      if (signal.aborted) kill();
      const { StatusCode: exitCode } = (await container.wait()) as { StatusCode: number };
      await Promise.race([streamEnded, new Promise((resolve) => setTimeout(resolve, 2_000))]);
      if (exitCode === 0 || signal.aborted) return { exitCode };
      if (!(await scriptStarted(spec))) throw scriptNotStartedError(spec.image, exitCode);
      const oomKilled = await wasOomKilled(container);
      let failedStep = await readMarker(spec, FAILED_STEP_FILE);
      let detail: string | undefined;
      if (failedStep === undefined && exitCode > 128) {
        // run.sh itself was killed, so it recorded no failing step: the step it ran is named.
        failedStep = await readMarker(spec, RUNNING_STEP_FILE);
        // Running out of memory is the step's `failure` (see docs/execution.md), so only a
        // container that did not is checked for a kill from outside.
        if (!oomKilled) detail = await this.#checkKilledScript(container.id, exitCode, failedStep);
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
      signal.removeEventListener('abort', kill);
    }
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
  ): Promise<string> {
    const signal = exitCode - 128;
    let kills: number[];
    try {
      kills = await engineKillSignals(this.docker, containerId);
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

  async cleanup(spec: ExecutionSpec): Promise<void> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_TASK}=${spec.taskId}`] },
    });
    for (const info of containers) {
      await this.docker
        .getContainer(info.Id)
        .remove({ force: true, v: true })
        .catch((error: { statusCode?: number }) => {
          if (error.statusCode !== 404 && error.statusCode !== 409) throw error;
        });
    }
  }

  async #requireImage(image: string): Promise<void> {
    try {
      await this.docker.getImage(image).inspect();
    } catch (error) {
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
async function wasOomKilled(container: Docker.Container): Promise<boolean> {
  try {
    return (await container.inspect()).State.OOMKilled;
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return false;
    throw error;
  }
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

function engineMessage(error: unknown): string {
  const json = (error as { json?: { message?: string } }).json;
  return json?.message ?? (error as Error).message ?? String(error);
}
