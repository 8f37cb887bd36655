import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type Docker from 'dockerode';
import {
  LABEL_ATTEMPT,
  LABEL_INSTANCE,
  LABEL_JOB,
  LABEL_MANAGED,
  LABEL_TASK,
  instanceId,
} from '../../src/jobs/labels.js';
import { workspaceFor } from '../../src/execution/checkout.js';
import {
  buildBusyboxImage,
  requireDocker,
  TEST_IMAGE,
  TEST_IMAGE_PREFIX,
} from '../support/docker.js';
import {
  makeRepository,
  startHarness,
  writePipelineFile,
  type ExecutionHarness,
} from '../support/execution.js';

const run = randomBytes(4).toString('hex');
/** An image with busybox in /usr/local/bb only, so without /bin/sh. */
const NO_SHELL_IMAGE = `${TEST_IMAGE_PREFIX}-no-shell:${run}`;
/** An image whose ENTRYPOINT would swallow the step script and exit 0. */
const ENTRYPOINT_IMAGE = `${TEST_IMAGE_PREFIX}-entrypoint:${run}`;
/** An image whose USER is uid 65534, which cannot write a checkout that root owns. */
const NOBODY_IMAGE = `${TEST_IMAGE_PREFIX}-nobody:${run}`;

describe('docker executor through the API', () => {
  let docker: Docker;
  let harness: ExecutionHarness;
  let repo: { dir: string; commit: string };

  const containersOf = (jobId: string) =>
    docker.listContainers({ all: true, filters: { label: [`${LABEL_JOB}=${jobId}`] } });

  /** Waits until a running container of the attempt exists and the log shows its first step. */
  const containerInStep = async (jobId: string, attempt: number) => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const [container] = await docker.listContainers({
        filters: { label: [`${LABEL_JOB}=${jobId}`, `${LABEL_ATTEMPT}=${attempt}`] },
      });
      const log = await harness.logs(jobId);
      if (container !== undefined && log.includes('[slipway] step 1/1')) return container;
      if (Date.now() > deadline) {
        throw new Error(`attempt ${attempt} of job ${jobId} did not start its step:\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  beforeAll(async () => {
    docker = await requireDocker();
    buildBusyboxImage(NO_SHELL_IMAGE, { binDir: '/usr/local/bb' });
    const base = await docker.createContainer({ Image: TEST_IMAGE, Cmd: ['true'] });
    try {
      execFileSync('docker', [
        'commit',
        '--change',
        'ENTRYPOINT ["/bin/echo"]',
        base.id,
        ENTRYPOINT_IMAGE,
      ]);
    } finally {
      await base.remove({ force: true });
    }
    buildBusyboxImage(NOBODY_IMAGE, { binDir: '/bin', user: '65534' });
    repo = makeRepository({ 'hello.txt': 'hello from the repository\n' });
    const pipelines = writePipelineFile(`
repository: ${repo.dir}
pipelines:
  ci:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    resources: { memory: 64m, cpus: 0.5, pids: 64 }
    steps:
      - name: read
        run: cat hello.txt && echo "commit=$SLIPWAY_COMMIT"
      - name: socket
        run: if [ -e /var/run/docker.sock ]; then echo socket-present; exit 1; fi; echo no-socket
  failing:
    executor: docker
    image: ${TEST_IMAGE}
    steps:
      - name: ok
        run: echo fine
      - name: bad
        run: exit 7
  interleaved:
    executor: docker
    image: ${TEST_IMAGE}
    steps:
      - name: both
        run: seq 1 3000; echo on-stderr >&2; exit 4
  missing-image:
    executor: docker
    image: slipway-test-no-such-image:never
    steps:
      - run: echo never
  no-shell:
    executor: docker
    image: ${NO_SHELL_IMAGE}
    steps:
      - name: never
        run: echo never
  nobody:
    executor: docker
    image: ${NOBODY_IMAGE}
    steps:
      - name: read
        run: cat hello.txt && id -u
      - name: write
        run: touch newfile
  fixed-user:
    executor: docker
    image: ${TEST_IMAGE}
    user: "1234:1234"
    steps:
      - name: ids
        run: echo "uid=$(id -u) gid=$(id -g)"
      - name: fail
        run: exit 3
  worker-user:
    executor: docker
    image: ${NOBODY_IMAGE}
    user: worker
    steps:
      - name: write
        run: |
          echo "uid=$(id -u) gid=$(id -g)"
          echo written > made-by-step
          mkdir -p made-dir && echo nested > made-dir/file
          i=0
          while [ ! -e release ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
          [ -e release ]
  unknown-user:
    executor: docker
    image: ${TEST_IMAGE}
    user: no-such-user
    steps:
      - run: echo never
  exit-127:
    executor: docker
    image: ${TEST_IMAGE}
    steps:
      - name: missing-command
        run: no-such-command
  long:
    executor: docker
    image: ${TEST_IMAGE}
    steps:
      - name: sleep
        run: sleep 300
  slow:
    executor: docker
    image: ${TEST_IMAGE}
    timeout: 2s
    retries: 1
    steps:
      - name: sleep
        run: sleep 300
  out-of-memory:
    executor: docker
    image: ${TEST_IMAGE}
    retries: 1
    resources: { memory: 16m }
    steps:
      - name: fill
        run: head -c 200000000 /dev/zero | tail
  self-kill:
    executor: docker
    image: ${TEST_IMAGE}
    steps:
      - name: kill-script
        run: kill -KILL $PPID; sleep 30
  released:
    executor: docker
    image: ${TEST_IMAGE}
    retries: 1
    steps:
      - name: wait
        run: |
          i=0
          while [ ! -e /tmp/release ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
          [ -e /tmp/release ]
  entrypoint:
    executor: docker
    image: ${ENTRYPOINT_IMAGE}
    steps:
      - name: check
        run: echo step-ran; exit 5
`);
    harness = await startHarness({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_EXECUTOR: 'docker',
      SLIPWAY_WORKER_CAPACITY: '2',
    });
  });

  afterAll(async () => {
    await harness?.close();
    if (docker !== undefined && harness !== undefined) {
      const instance = instanceId(harness.server.context.store);
      const left = await docker.listContainers({
        all: true,
        filters: { label: [`${LABEL_INSTANCE}=${instance}`] },
      });
      for (const info of left) await docker.getContainer(info.Id).remove({ force: true });
    }
    for (const image of [NO_SHELL_IMAGE, ENTRYPOINT_IMAGE, NOBODY_IMAGE]) {
      await docker
        ?.getImage(image)
        .remove({ force: true })
        .catch(() => undefined);
    }
  });

  it('runs steps in a labelled, limited container', async () => {
    const id = await harness.trigger('ci', { commit: repo.commit });
    let inspected: Docker.ContainerInspectInfo | undefined;
    const deadline = Date.now() + 20_000;
    while (inspected === undefined && Date.now() < deadline) {
      const [info] = await containersOf(id);
      if (info !== undefined) {
        inspected = await docker
          .getContainer(info.Id)
          .inspect()
          .catch(() => undefined);
      }
      const job = (await harness.server.request('GET', `/api/job/${id}`, { token: harness.token }))
        .body;
      if (job.status !== 'queued' && job.status !== 'running' && inspected === undefined) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('success');
    const logs = await harness.logs(id);
    expect(logs).toContain('hello from the repository');
    expect(logs).toContain(`commit=${repo.commit}`);
    expect(logs).toContain('no-socket');

    expect(inspected).toBeDefined();
    const labels = inspected!.Config.Labels;
    expect(labels[LABEL_MANAGED]).toBe('true');
    expect(labels[LABEL_TASK]).toBe(job.tasks[0].id);
    expect(labels[LABEL_INSTANCE]).toBe(instanceId(harness.server.context.store));
    expect(inspected!.HostConfig.Memory).toBe(64 * 1024 * 1024);
    expect(inspected!.HostConfig.NanoCpus).toBe(500_000_000);
    expect(inspected!.HostConfig.PidsLimit).toBe(64);
    expect(inspected!.HostConfig.NetworkMode).toBe('none');
    // Without `user` the image's USER applies.
    expect(inspected!.Config.User).toBe('');
    const binds = inspected!.HostConfig.Binds ?? [];
    expect(binds.some((bind) => bind.includes('docker.sock'))).toBe(false);
    expect(await containersOf(id)).toEqual([]);
  });

  it('runs the steps of an image with an ENTRYPOINT', async () => {
    const id = await harness.trigger('entrypoint', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(await harness.logs(id)).toContain('step-ran');
    expect(job.status).toBe('failure');
    expect(job.reason).toContain('step "check" exited with code 5');
  });

  it('reports the failing step and its exit code', async () => {
    const id = await harness.trigger('failing', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('failure');
    expect(job.tasks[0].exit_code).toBe(7);
    expect(job.reason).toContain('step "bad" exited with code 7');
    expect(await containersOf(id)).toEqual([]);
  });

  it('keeps stdout and stderr in order', async () => {
    const id = await harness.trigger('interleaved', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('failure');
    const lines = (await harness.logs(id)).split('\n');
    const header = lines.indexOf('[slipway] step 1/1: both');
    const stderrLine = lines.indexOf('on-stderr');
    expect(header).toBeGreaterThanOrEqual(0);
    expect(lines.indexOf('1')).toBeGreaterThan(header);
    expect(stderrLine).toBeGreaterThan(lines.indexOf('3000'));
    expect(lines[stderrLine + 1]).toBe('[slipway] step "both" exited with code 4');
  });

  it('ends a task whose image is missing as error', async () => {
    const id = await harness.trigger('missing-image', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('error');
    expect(job.reason).toContain('image slipway-test-no-such-image:never not found');
  });

  it('ends a task whose image has no /bin/sh as error', async () => {
    const id = await harness.trigger('no-shell', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('error');
    expect(job.reason).toContain(`image ${NO_SHELL_IMAGE} has no /bin/sh`);
    expect(await containersOf(id)).toEqual([]);
  });

  it('keeps a step exiting 127 a failure', async () => {
    const id = await harness.trigger('exit-127', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('failure');
    expect(job.tasks[0].exit_code).toBe(127);
    expect(job.reason).toContain('step "missing-command" exited with code 127');
  });

  it('names the failing step of a non-root image', async () => {
    const id = await harness.trigger('nobody', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('failure');
    expect(job.reason).toContain('step "write" exited with code 1');
    const logs = await harness.logs(id);
    expect(logs).toContain('hello from the repository');
    expect(logs).toContain('65534');
    expect(logs).toContain('Permission denied');
  });

  it('runs steps as a fixed user', async () => {
    const id = await harness.trigger('fixed-user', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    const logs = await harness.logs(id);
    expect(logs).toContain('uid=1234 gid=1234');
    // A failure, not an error, shows that uid 1234 wrote /slipway/started. The step's name in
    // the reason shows that it wrote /slipway/failed-step.
    expect(job.status).toBe('failure');
    expect(job.reason).toContain('step "fail" exited with code 3');
    expect(await containersOf(id)).toEqual([]);
  });

  it("runs steps as the worker's user", async () => {
    const uid = process.getuid!();
    const gid = process.getgid!();
    const id = await harness.trigger('worker-user', { commit: repo.commit });
    const running = await harness.waitForStatus(id, 'running');
    const workspace = workspaceFor(
      harness.server.context.config.workspacePath,
      running.tasks[0].id,
    );
    const madeFile = path.join(workspace.src, 'made-by-step');
    const deadline = Date.now() + 30_000;
    while (!fs.existsSync(madeFile) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(fs.existsSync(madeFile), 'the step did not create made-by-step').toBe(true);
    const owner = fs.statSync(madeFile);
    expect(owner.uid).toBe(uid);
    expect(owner.gid).toBe(gid);
    expect(fs.statSync(path.join(workspace.src, 'made-dir', 'file')).uid).toBe(uid);
    fs.writeFileSync(path.join(workspace.src, 'release'), '');

    const job = await harness.waitForJob(id);
    expect(job.status).toBe('success');
    expect(await harness.logs(id)).toContain(`uid=${uid} gid=${gid}`);
    // The worker removed the workspace with every file the step wrote.
    expect(fs.existsSync(workspace.root)).toBe(false);
  });

  it('ends a task whose user the image lacks as error', async () => {
    const id = await harness.trigger('unknown-user', { commit: repo.commit });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('error');
    expect(job.reason).toContain('could not start the container');
    expect(job.reason).toContain('no-such-user');
    expect(await containersOf(id)).toEqual([]);
  });

  it('ends a container killed from outside as error', async () => {
    const id = await harness.trigger('long', { commit: repo.commit });
    const container = await containerInStep(id, 1);
    await docker.getContainer(container.Id).kill();
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('error');
    expect(job.tasks[0].exit_code).toBe(137);
    expect(job.reason).toContain(
      'the container was killed from outside by SIGKILL during step "sleep"',
    );
  });

  it('ends a stopped container as error', async () => {
    const id = await harness.trigger('long', { commit: repo.commit });
    const container = await containerInStep(id, 1);
    await docker.getContainer(container.Id).stop({ t: 10 });
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('error');
    expect(job.tasks[0].exit_code).toBe(143);
    expect(job.reason).toContain(
      'the container was killed from outside by SIGTERM during step "sleep"',
    );
  });

  it('ends a container removed with force as error', async () => {
    const id = await harness.trigger('long', { commit: repo.commit });
    const container = await containerInStep(id, 1);
    await docker.getContainer(container.Id).remove({ force: true });
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('error');
    expect(job.tasks[0].exit_code).toBe(137);
    expect(job.reason).toContain(
      'the container was killed from outside by SIGKILL during step "sleep"',
    );
  });

  it('keeps a script killed from inside a failure', async () => {
    const id = await harness.trigger('self-kill', { commit: repo.commit });
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('failure');
    expect(job.tasks[0].exit_code).toBe(137);
    expect(job.reason).toContain('step "kill-script" exited with code 137');
    expect(job.reason).toContain('the step script was killed by SIGKILL');
    expect(job.reason).toContain('the Docker engine recorded no kill of the container');
  });

  it('keeps running out of memory a failure', async () => {
    const id = await harness.trigger('out-of-memory', { commit: repo.commit });
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('failure');
    expect(job.tasks[0].attempt).toBe(1);
    expect(job.tasks[0].exit_code).toBe(137);
    expect(job.reason).toContain('step "fill" exited with code 137');
    expect(job.reason).toContain('the container ran out of memory (limit 16777216 bytes)');
  });

  it('retries a task killed from outside', async () => {
    const id = await harness.trigger('released', { commit: repo.commit });
    const first = await containerInStep(id, 1);
    await docker.getContainer(first.Id).kill();
    const second = await containerInStep(id, 2);
    const exec = await docker
      .getContainer(second.Id)
      .exec({ Cmd: ['touch', '/tmp/release'], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({});
    await new Promise((resolve) => stream.on('end', resolve).resume());
    const job = await harness.waitForJob(id, 20_000);
    expect(job.status).toBe('success');
    expect(job.tasks[0].attempt).toBe(2);
    const audit = await harness.server.request(
      'GET',
      `/api/admin/audit-log?action=task_retried&job_id=${id}`,
      { token: harness.token },
    );
    expect(audit.body.entries).toHaveLength(1);
    expect(audit.body.entries[0].details.status).toBe('error');
    expect(audit.body.entries[0].details.exit_code).toBe(137);
    expect(audit.body.entries[0].details.reason).toContain(
      'the container was killed from outside by SIGKILL during step "wait"',
    );
  });

  it('keeps a timed-out container timed_out', async () => {
    // The worker kills the container itself here, and the engine records that kill too.
    const id = await harness.trigger('slow', { commit: repo.commit });
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('timed_out');
    expect(job.reason).toContain('timed out after 2s');
    expect(job.tasks[0].attempt).toBe(1);
  });

  it('removes the container of a cancelled task', async () => {
    const id = await harness.trigger('long', { commit: repo.commit });
    await harness.waitForStatus(id, 'running');
    const deadline = Date.now() + 20_000;
    while ((await containersOf(id)).length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect((await containersOf(id)).length).toBe(1);
    const started = Date.now();
    await harness.server.request('POST', `/api/job/${id}/cancel`, { token: harness.token });
    const job = await harness.waitForJob(id, 10_000);
    expect(job.status).toBe('cancelled');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await containersOf(id)).toEqual([]);
  });
});
