/**
 * Workspaces and checkouts. Each repository has one bare mirror on the worker's host; a new
 * job fetches into it (never clones it again), and each task gets a fresh workspace cloned
 * from the mirror with hard links, detached at the job's commit.
 *
 * Layout: <workspaces>/<task id>/src is the checkout (the steps' working directory) and
 * <workspaces>/<task id>/scratch holds the executor's files. Removing <task id> removes all.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { ExecutionError } from './executor.js';

const run = promisify(execFile);
const GIT_TIMEOUT_MS = 10 * 60_000;

export interface Workspace {
  root: string;
  src: string;
  scratch: string;
}

export function workspaceFor(workspacesRoot: string, taskId: string): Workspace {
  const root = path.join(workspacesRoot, taskId);
  return { root, src: path.join(root, 'src'), scratch: path.join(root, 'scratch') };
}

/** Creates an empty workspace, removing what an earlier attempt of the task left behind. */
export async function createWorkspace(workspacesRoot: string, taskId: string): Promise<Workspace> {
  const workspace = workspaceFor(workspacesRoot, taskId);
  await removeTree(workspace.root);
  await fs.mkdir(workspace.scratch, { recursive: true });
  return workspace;
}

export async function removeWorkspace(workspace: Workspace): Promise<void> {
  await removeTree(workspace.root);
}

/**
 * Removes `dir` and everything in it. Steps may leave directories without write or search
 * permission (`chmod 000`, Go's read-only module cache), which `rm -rf` cannot empty, so on
 * EACCES or EPERM this gives this process's own directories `u+rwx` and tries again.
 * Directories of another user (a container step that ran as root) stay, and the error remains.
 */
export async function removeTree(dir: string): Promise<void> {
  try {
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw error;
    await makeDirectoriesWritable(dir);
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** Adds `u+rwx` to `dir` and every directory under it that this process may chmod. */
async function makeDirectoriesWritable(dir: string): Promise<void> {
  // lstat and Dirent do not follow symbolic links, so no chmod reaches outside the tree.
  const stat = await fs.lstat(dir).catch(() => undefined);
  if (stat === undefined || !stat.isDirectory()) return;
  // EPERM: another user's directory, which the second removal reports.
  await fs.chmod(dir, (stat.mode & 0o7777) | 0o700).catch(() => undefined);
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    if (entry.isDirectory()) await makeDirectoriesWritable(path.join(dir, entry.name));
  }
}

export class MirrorSet {
  /** One fetch or clone per mirror at a time, within this process. */
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Jobs whose commit was fetched already, so their other tasks skip the fetch. */
  readonly #fetchedFor = new Set<string>();

  constructor(readonly root: string) {}

  mirrorPath(repository: string): string {
    const name = path
      .basename(repository)
      .replace(/\.git$/, '')
      .replace(/[^\w.-]/g, '_');
    const hash = createHash('sha256').update(repository).digest('hex').slice(0, 12);
    return path.join(this.root, `${name}-${hash}.git`);
  }

  /**
   * Makes sure the mirror contains `commit`: clones it once, and fetches when the commit is
   * missing or a new job asks for it. Returns the full commit id; throws ExecutionError
   * naming the commit when the repository does not have it.
   */
  async ensureCommit(
    repository: string,
    commit: string,
    jobId: string,
    signal?: AbortSignal,
  ): Promise<string> {
    const mirror = this.mirrorPath(repository);
    return this.#withLock(mirror, async () => {
      const exists = await fs
        .stat(path.join(mirror, 'HEAD'))
        .then(() => true)
        .catch(() => false);
      if (!exists) {
        await fs.mkdir(this.root, { recursive: true });
        const partial = `${mirror}.partial-${process.pid}`;
        await fs.rm(partial, { recursive: true, force: true });
        await git(['clone', '--mirror', '--quiet', repository, partial], undefined, signal);
        await fs.rename(partial, mirror);
        this.#fetchedFor.add(jobId);
      }
      let resolved = await resolveCommit(mirror, commit);
      if (resolved === undefined || !this.#fetchedFor.has(jobId)) {
        await git(['fetch', '--prune', '--quiet', 'origin'], mirror, signal);
        this.#fetchedFor.add(jobId);
        resolved = await resolveCommit(mirror, commit);
      }
      if (resolved === undefined) {
        throw new ExecutionError(`commit ${commit} not found in repository ${repository}`);
      }
      return resolved;
    });
  }

  async #withLock<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(work);
    this.#locks.set(
      key,
      next.catch(() => undefined),
    );
    return next;
  }
}

/** Clones the mirror into `workspace.src` and detaches at `commit`. */
export async function checkout(
  mirrors: MirrorSet,
  repository: string,
  commit: string,
  jobId: string,
  workspace: Workspace,
  signal?: AbortSignal,
): Promise<string> {
  const resolved = await mirrors.ensureCommit(repository, commit, jobId, signal);
  const mirror = mirrors.mirrorPath(repository);
  await git(
    ['clone', '--local', '--no-checkout', '--quiet', mirror, workspace.src],
    undefined,
    signal,
  );
  await git(
    ['-c', 'advice.detachedHead=false', 'checkout', '--quiet', '--detach', resolved],
    workspace.src,
    signal,
  );
  return resolved;
}

async function resolveCommit(mirror: string, commit: string): Promise<string | undefined> {
  try {
    const { stdout } = await run(
      'git',
      ['rev-parse', '--verify', '--quiet', `${commit}^{commit}`],
      {
        cwd: mirror,
        env: gitEnv(),
      },
    );
    return stdout.trim();
  } catch {
    return undefined;
  }
}

async function git(args: string[], cwd: string | undefined, signal?: AbortSignal): Promise<void> {
  try {
    await run('git', args, {
      cwd,
      env: gitEnv(),
      timeout: GIT_TIMEOUT_MS,
      maxBuffer: 16 * 1024 * 1024,
      ...(signal === undefined ? {} : { signal }),
    });
  } catch (error) {
    const stderr = String((error as { stderr?: string }).stderr ?? '').trim();
    throw new ExecutionError(
      `git ${args
        .filter((arg) => !arg.startsWith('-'))
        .slice(0, 2)
        .join(' ')} failed: ${stderr || (error as Error).message}`,
      { cause: error },
    );
  }
}

/** Environment in which git never prompts for credentials and ignores the user's global config. */
function gitEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GIT_TERMINAL_PROMPT: '0',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
  };
}
