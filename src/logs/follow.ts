/**
 * Reads task logs for the log endpoint: the whole file, or (follow) the file and then each
 * append as it is written, until the task ends. Appends made in this process wake the
 * reader at once; a timer covers tasks that other processes end (lease expiry recovery).
 */
import fs from 'node:fs';
import type { AppContext } from '../app/context.js';
import { isTerminal } from '../jobs/status.js';
import { param, prepare } from '../store/prepared.js';
import type { TaskRow } from '../store/schema.js';
import type { TaskLogStore } from './task-log-store.js';

/** Maximum time a follower waits for an append before it checks the file and the task again. */
const FOLLOW_RECHECK_MS = 500;
const READ_CHUNK_BYTES = 256 * 1024;

export interface FollowOptions {
  context: AppContext;
  logs: TaskLogStore;
  follow: boolean;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
  /** Reads only this attempt: a followed stream ends once a newer attempt has started. */
  attempt?: number | undefined;
}

/** Yields the task's log bytes; with `follow`, keeps yielding until the task ends. */
export async function* readTaskLog(taskId: string, options: FollowOptions): AsyncGenerator<Buffer> {
  let offset = 0;
  let file: string | null = null;
  for (;;) {
    const task = loadTask(options.context, taskId);
    if (task === undefined) return;
    if (options.attempt !== undefined && task.attempt > options.attempt) {
      // The attempt ended and a newer one started: the rest of its own file, then the end.
      const own = options.logs.pathFor(task.job_id, task.id, options.attempt);
      if (own !== file) offset = 0;
      for await (const chunk of readFrom(own, offset)) yield chunk;
      return;
    }
    if (task.log_path !== file) {
      file = task.log_path;
      offset = 0;
    }
    const ended = isTerminal(task.status);
    if (file !== null) {
      for await (const chunk of readFrom(file, offset)) {
        offset += chunk.length;
        yield chunk;
      }
    } else if (ended && task.attempt > 0) {
      // A worker ran the task, so it had a log, which the cleanup deleted (see cleanup.ts).
      const days = options.context.config.retention.logsDays;
      yield Buffer.from(
        `[slipway] this log was deleted by log retention (RETENTION_LOGS_DAYS, now ${days})\n`,
      );
    }
    if (!options.follow || ended || options.signal.aborted) return;
    await waitForNews(options, file, taskId);
  }
}

async function* readFrom(file: string, start: number): AsyncGenerator<Buffer> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, 'r');
  } catch {
    return;
  }
  try {
    let position = start;
    for (;;) {
      // Only the bytes left, not a whole chunk. Each append wakes every follower, and a
      // 256 KiB buffer per follower for a few lines kept the garbage collector busy.
      const { size } = await handle.stat();
      if (size <= position) return;
      const length = Math.min(READ_CHUNK_BYTES, size - position);
      const buffer = Buffer.allocUnsafe(length);
      const { bytesRead } = await handle.read(buffer, 0, length, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

const TASK_BY_ID = prepare<{ id: string }>((db) =>
  db.selectFrom('tasks').selectAll().where('id', '=', param('id')),
);

/**
 * Reads the task on the read connection. Every follower reads it at each append, and on the
 * write connection those reads queued with the heartbeats and log uploads of the workers.
 */
function loadTask(context: AppContext, taskId: string): TaskRow | undefined {
  return context.store.read((sqlite) => TASK_BY_ID.get<TaskRow>(sqlite, { id: taskId }));
}

function waitForNews(options: FollowOptions, file: string | null, taskId: string): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      options.logs.changes.off('append', onAppend);
      options.context.events.off('task-status', onStatus);
      options.signal.removeEventListener('abort', done);
      resolve();
    };
    const onAppend = (appended: string) => {
      if (file === null || appended === file) done();
    };
    const onStatus = (change: { taskId: string }) => {
      if (change.taskId === taskId) done();
    };
    const timer = setTimeout(done, FOLLOW_RECHECK_MS);
    options.logs.changes.on('append', onAppend);
    options.context.events.on('task-status', onStatus);
    options.signal.addEventListener('abort', done, { once: true });
  });
}
