/**
 * The GitHub commit status of a job or task: its context, state and description. GitHub keeps the latest status per commit and context, so each job type gets
 * one context (`slipway/ci`) and each matrix task one more (`slipway/ci (3.11)`).
 */
import type { Status } from '../jobs/status.js';
import type { GitHubState, TaskRow } from '../store/schema.js';
import { parseJsonColumn } from '../store/json.js';

/** GitHub rejects longer descriptions with 422 "description is too long (maximum is 140 characters)". */
export const MAX_DESCRIPTION_LENGTH = 140;

/** GitHub resolves statuses against full object ids: 40 hex digits (SHA-1) or 64 (SHA-256). */
const FULL_SHA = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

export function isFullSha(commit: string | null): commit is string {
  return commit !== null && FULL_SHA.test(commit);
}

/**
 * GitHub has four states. Statuses that did not pass map to `failure` when the code under
 * test is to blame (failure, timed_out) and to `error` otherwise, so a required check never
 * stays pending after a job ended.
 */
export const GITHUB_STATES: Record<Status, GitHubState> = {
  waiting: 'pending',
  queued: 'pending',
  running: 'pending',
  success: 'success',
  failure: 'failure',
  timed_out: 'failure',
  error: 'error',
  cancelled: 'error',
  skipped: 'error',
};

export function jobContext(type: string): string {
  return `slipway/${type}`;
}

/** Returns the task's context, or undefined for a task without matrix values (the job's covers it). */
export function taskContext(type: string, task: TaskRow): string | undefined {
  const matrix = parseJsonColumn<Record<string, string>>(task.matrix, {});
  const values = Object.values(matrix);
  if (values.length === 0) return undefined;
  return `${jobContext(type)} (${values.join(', ')})`;
}

interface Described {
  status: Status;
  reason: string | null;
  started_at: string | null;
  finished_at: string | null;
}

/** Builds a one-line description such as `succeeded in 1m 12s` or `failed: ci (3.11): exit 1`. */
export function describeStatus(subject: Described): string {
  const duration = formatDuration(subject.started_at, subject.finished_at);
  const reason = subject.reason === null ? '' : `: ${subject.reason}`;
  const texts: Record<Status, string> = {
    waiting: `waiting${reason}`,
    queued: 'queued',
    running: 'running',
    success: duration === undefined ? 'succeeded' : `succeeded in ${duration}`,
    failure: `failed${reason}`,
    timed_out: `timed out${reason}`,
    error: `error${reason}`,
    cancelled: `cancelled${reason}`,
    skipped: `skipped${reason}`,
  };
  return truncate(texts[subject.status].replace(/\s+/g, ' '));
}

function truncate(text: string): string {
  if (text.length <= MAX_DESCRIPTION_LENGTH) return text;
  let end = MAX_DESCRIPTION_LENGTH - 1;
  // A cut inside a surrogate pair would leave half a character. The outbox row then reads
  // back with three U+FFFD in its place, so the description is over the limit (seen with
  // better-sqlite3), and GitHub rejects the status for good.
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return `${text.slice(0, end)}…`;
}

function formatDuration(start: string | null, end: string | null): string | undefined {
  if (start === null || end === null) return undefined;
  const seconds = Math.max(0, Math.round((Date.parse(end) - Date.parse(start)) / 1000));
  if (!Number.isFinite(seconds)) return undefined;
  const minutes = Math.floor(seconds / 60);
  const hours = Math.floor(minutes / 60);
  if (hours > 0) return `${hours}h ${minutes % 60}m`;
  if (minutes > 0) return `${minutes}m ${seconds % 60}s`;
  return `${seconds}s`;
}
