/**
 * The user that the docker executor runs a task's container as: a job type's `user`, passed to
 * the Docker Engine API as the container's `User`. It is a Docker user spec (`name`, `uid`,
 * `name:group` or `uid:gid`), or `worker` for the worker process's own uid and gid, so that
 * steps can write the checkout and the worker can remove what they wrote.
 */
import { ExecutionError } from './executor.js';

/** The `user` value that means the worker process's uid and gid. */
export const WORKER_USER = 'worker';

/**
 * Largest uid or gid that the Docker engine accepts. Docker 20.10 fails a container start with
 * "uids and gids must be in range 0-2147483647" for a larger one.
 */
export const MAX_CONTAINER_ID = 2 ** 31 - 1;

/** A user or group name, or a numeric id. */
const NAME_OR_ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const NUMERIC_ID = /^\d+$/;

/**
 * Returns why `user` is not a valid container user, or undefined when it is. The message
 * follows the pipeline loader's style: the rule, then the value.
 */
export function describeUserProblem(user: string): string | undefined {
  const got = `got ${JSON.stringify(user)}`;
  if (user === '') {
    return 'must not be empty; write a user such as 1000, 1000:1000, app or app:app, or worker';
  }
  if (user.includes('${{')) {
    return `takes no template: the container user is the same for every task of the job type, ${got}`;
  }
  if (/\s/.test(user)) return `must not contain whitespace, ${got}`;

  const parts = user.split(':');
  if (parts.length > 2) return `must contain at most one ":" (user:group), ${got}`;
  const [name, group] = parts as [string, string | undefined];
  if (name === '') return `must name a user before ":", ${got}`;
  if (group === '') return `must name a group after ":", ${got}`;

  if (name === WORKER_USER && group !== undefined) {
    return (
      `"worker" means the worker process's uid and gid and takes no group, ${got}; ` +
      'write worker alone, or the uid of an image user named worker'
    );
  }

  for (const part of parts) {
    if (!NAME_OR_ID.test(part)) {
      return (
        `must be a name or number made of letters, digits, ".", "_" and "-" that does not ` +
        `start with "." or "-", on each side of ":", ${got}`
      );
    }
    if (NUMERIC_ID.test(part) && Number(part) > MAX_CONTAINER_ID) {
      return `must use a uid and gid of at most ${MAX_CONTAINER_ID}, the Docker engine's limit, ${got}`;
    }
  }
  return undefined;
}

/**
 * Returns the `User` option of a task's container: undefined (the image's USER) when the job
 * type sets no user, the worker process's `uid:gid` for `worker`, else the value as written.
 */
export function resolveContainerUser(user: string | null): string | undefined {
  if (user === null) return undefined;
  if (user !== WORKER_USER) return user;
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  if (uid === undefined || gid === undefined) {
    throw new ExecutionError(
      'user "worker" needs the worker process\'s uid and gid, which this platform does not ' +
        'provide; set a uid:gid instead',
    );
  }
  return `${uid}:${gid}`;
}
