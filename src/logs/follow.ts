/**
 * Reads task logs for the log endpoint: the whole file, or (follow) the file and then each
 * append as it is written, until the task ends. Appends made in this process wake the
 * reader at once; a timer covers tasks that other processes end (lease expiry recovery).
 * Followers of one file that wake at the same offset share one read of the new bytes.
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
/** Maximum wait for the line that ends an attempt's file, and the time between reads meanwhile. */
const ENDED_NOTE_WAIT_MS = 2_000;
const ENDED_NOTE_POLL_MS = 100;
/** Bytes read from the end of an ended attempt's file, enough to hold Slipway's longest note. */
const TAIL_BYTES = 4096;
/** Milliseconds for which followers share a task row that they read. */
const SHARED_TASK_MS = 100;
/** Task rows kept for sharing. */
const SHARED_TASKS = 64;

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
      yield* restOfEndedAttempt(options, own, own === file ? offset : 0);
      return;
    }
    if (task.log_path !== file) {
      // A newer attempt started. The end of the earlier attempt's file, such as the note
      // of why its lease expired, may have been written after this follower last read it.
      if (file !== null) yield* restOfEndedAttempt(options, file, offset);
      file = task.log_path;
      offset = 0;
    }
    const ended = isTerminal(task.status);
    if (file !== null) {
      for await (const chunk of readShared(options.logs, file, offset)) {
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
    await waitForNews(options, file, FOLLOW_RECHECK_MS, taskId);
  }
}

/**
 * Yields the rest of an ended attempt's file. Slipway ends such a file with a `[slipway]` line
 * that gives the reason the attempt ended. When a lease expires, the orchestrator, possibly in
 * another process, writes that line after it has queued the task again, so a follower can see
 * the next attempt first. Without that line at the end, this waits up to ENDED_NOTE_WAIT_MS.
 *
 * NOTE: a `[slipway]` line that PROGRESS_NOTES does not list counts as the end, as does a
 * step's own line that starts with `[slipway]`. Such an attempt is not waited for.
 */
async function* restOfEndedAttempt(
  options: FollowOptions,
  file: string,
  start: number,
): AsyncGenerator<Buffer> {
  let offset = start;
  const deadline = Date.now() + ENDED_NOTE_WAIT_MS;
  for (;;) {
    // Checked before the read, so that the read includes the note it found.
    const ended = await endsWithNote(file);
    for await (const chunk of readShared(options.logs, file, offset)) {
      offset += chunk.length;
      yield chunk;
    }
    if (ended || Date.now() >= deadline || options.signal.aborted) return;
    await waitForNews(options, file, Math.min(ENDED_NOTE_POLL_MS, deadline - Date.now()));
  }
}

/**
 * Lines that Slipway writes while an attempt runs, as opposed to the line that ends it: the
 * attempt's header, the checkout notes and each step's header.
 */
const PROGRESS_NOTES = [
  /^\[slipway\] \S+ \(task \S+, attempt \d+\) on worker /,
  /^\[slipway\] (checking out |nothing to check out |commit \S+ is )/,
  /^\[slipway\] step \d+\/\d+: /,
];

/** Returns whether the last line of the file is a line of Slipway's that ends an attempt. */
async function endsWithNote(file: string): Promise<boolean> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, 'r');
  } catch {
    return false;
  }
  let text: string;
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    text = buffer.toString('utf8');
  } finally {
    await handle.close();
  }
  if (text.endsWith('\n')) text = text.slice(0, -1);
  const line = text.slice(text.lastIndexOf('\n') + 1);
  return line.startsWith('[slipway]') && !PROGRESS_NOTES.some((note) => note.test(line));
}

/**
 * Reads of followed files in progress, by file and offset. Each append wakes every follower
 * of the file, and the followers that have caught up all wake at the same offset. The first
 * starts the read of the new bytes, and the others wait for that read instead of opening,
 * reading and closing the file again. An append ends the sharing of the reads in progress,
 * because they may have looked for the end of the file before it.
 */
export class SharedReads {
  readonly #reads = new Map<string, Map<number, Promise<Buffer>>>();

  constructor(logs: TaskLogStore) {
    logs.changes.on('append', (file) => this.#reads.delete(file));
  }

  /** Resolves to the bytes from `start` to the end of the file, at most READ_CHUNK_BYTES. */
  read(file: string, start: number): Promise<Buffer> {
    let reads = this.#reads.get(file);
    const shared = reads?.get(start);
    if (shared !== undefined) return shared;
    if (reads === undefined) {
      reads = new Map();
      this.#reads.set(file, reads);
    }
    const read = readAt(file, start);
    reads.set(start, read);
    const forget = () => {
      const current = this.#reads.get(file);
      if (current?.get(start) !== read) return;
      current.delete(start);
      if (current.size === 0) this.#reads.delete(file);
    };
    read.then(forget, forget);
    return read;
  }
}

const sharedReadsOf = new WeakMap<TaskLogStore, SharedReads>();

/**
 * Yields the file's bytes from `start` to its end, sharing each read with the followers
 * that need the same bytes at the same time.
 */
async function* readShared(
  logs: TaskLogStore,
  file: string,
  start: number,
): AsyncGenerator<Buffer> {
  let shared = sharedReadsOf.get(logs);
  if (shared === undefined) {
    shared = new SharedReads(logs);
    sharedReadsOf.set(logs, shared);
  }
  let position = start;
  for (;;) {
    const bytes = await shared.read(file, position);
    if (bytes.length === 0) return;
    position += bytes.length;
    yield bytes;
  }
}

/**
 * Reads the bytes from `start` to the end of the file, at most READ_CHUNK_BYTES, or none when
 * the file does not exist.
 */
async function readAt(file: string, start: number): Promise<Buffer> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, 'r');
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const { size } = await handle.stat();
    if (size <= start) return Buffer.alloc(0);
    const length = Math.min(READ_CHUNK_BYTES, size - start);
    const buffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await handle.read(buffer, 0, length, start);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

const TASK_BY_ID = prepare<{ id: string }>((db) =>
  db.selectFrom('tasks').selectAll().where('id', '=', param('id')),
);

/** Task rows that followers read lately, by task id, with when each was read. */
const recentTasksOf = new WeakMap<AppContext, Map<string, { task: TaskRow; at: number }>>();

/**
 * Reads the task on the read connection. Every follower reads it at each append, and on the
 * write connection those reads queued with the heartbeats and log uploads of the workers.
 * The followers that one append wakes share one read: a row is used for SHARED_TASK_MS, and
 * a status change in this process drops it at once.
 */
function loadTask(context: AppContext, taskId: string): TaskRow | undefined {
  let recent = recentTasksOf.get(context);
  if (recent === undefined) {
    const tasks = new Map<string, { task: TaskRow; at: number }>();
    context.events.on('task-status', (change: { taskId: string }) => tasks.delete(change.taskId));
    recentTasksOf.set(context, tasks);
    recent = tasks;
  }
  const shared = recent.get(taskId);
  if (shared !== undefined && Date.now() - shared.at <= SHARED_TASK_MS) return shared.task;
  const task = context.store.read((sqlite) => TASK_BY_ID.get<TaskRow>(sqlite, { id: taskId }));
  recent.delete(taskId);
  if (task === undefined) return undefined;
  recent.set(taskId, { task, at: Date.now() });
  if (recent.size > SHARED_TASKS) recent.delete(recent.keys().next().value!);
  return task;
}

/**
 * Resolves at the next append to `file` in this process (to any file while it is null), at a
 * status change of the task `taskId`, after `ms`, or when the client leaves.
 */
function waitForNews(
  options: FollowOptions,
  file: string | null,
  ms: number,
  taskId?: string,
): Promise<void> {
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
      if (taskId !== undefined && change.taskId === taskId) done();
    };
    const timer = setTimeout(done, ms);
    options.logs.changes.on('append', onAppend);
    options.context.events.on('task-status', onStatus);
    options.signal.addEventListener('abort', done, { once: true });
  });
}
