import type { Config } from '../config/env.js';
import { explainEachQueued, explainQueued } from '../orchestrator/diagnose.js';
import type { Store } from '../store/database.js';
import { parseJsonColumn } from '../store/json.js';
import { readCurrentTasks, readJob, readJobList, type JobListQuery } from '../store/jobs.js';
import type { JobRow, TaskRow } from '../store/schema.js';
import type { JobSummaryView, JobView, TaskView } from './schemas.js';

export function jobSummaryView(job: JobRow): JobSummaryView {
  const self = `/api/job/${job.id}`;
  // The column stores the matrix inputs of the trigger body next to its `params` object.
  const { params = {}, ...inputs } = parseJsonColumn<Record<string, unknown>>(job.params, {});
  return {
    id: job.id,
    type: job.type,
    status: job.status,
    commit: job.commit_sha,
    branch: job.branch,
    attempt: job.attempt,
    reason: job.reason,
    inputs,
    params: params as Record<string, unknown>,
    github_run_id: job.github_run_id,
    github_run_attempt: job.github_run_attempt,
    requested_by: job.requested_by,
    concurrency_group: job.concurrency_group,
    created_at: job.created_at,
    queued_at: job.queued_at,
    started_at: job.started_at,
    finished_at: job.finished_at,
    updated_at: job.updated_at,
    links: { self, logs: `${self}/logs` },
  };
}

export function taskView(task: TaskRow): TaskView {
  return {
    id: task.id,
    name: task.name,
    matrix: parseJsonColumn<Record<string, string>>(task.matrix, {}),
    status: task.status,
    executor: task.executor,
    worker_id: task.worker_id,
    attempt: task.attempt,
    exit_code: task.exit_code,
    reason: task.reason,
    cancel_requested: task.cancel_requested_at !== null,
    lease_expires_at: task.lease_expires_at,
    queued_at: task.queued_at,
    started_at: task.started_at,
    finished_at: task.finished_at,
    logs_url: `/api/job/${task.job_id}/logs?task=${encodeURIComponent(task.id)}`,
  };
}

export function jobView(job: JobRow, tasks: TaskRow[]): JobView {
  return { ...jobSummaryView(job), tasks: tasks.map(taskView) };
}

/**
 * Reads the job as the API shows it, in one read transaction. A queued job's reason is worked
 * out now rather than taken from the row, where the sweep may have stored one that is stale
 * since a worker came online.
 */
export function readJobView(store: Store, config: Config, id: string): JobView | undefined {
  return store.read((sqlite) => {
    const job = readJob(sqlite, id);
    if (job === undefined) return undefined;
    const tasks = readCurrentTasks(sqlite, job);
    const view = jobView(job, tasks);
    if (view.status === 'queued') view.reason = explainQueued(sqlite, config, job, tasks) ?? null;
    return view;
  });
}

/**
 * Reads one page of the job listing as the API shows it, in one read transaction. A queued
 * job's reason is worked out as readJobView does, with a fixed number of queries for the whole
 * page rather than queries per job.
 */
export function readJobListView(
  store: Store,
  config: Config,
  query: JobListQuery,
): JobSummaryView[] {
  return store.read((sqlite) => {
    const jobs = readJobList(sqlite, query);
    const reasons = explainEachQueued(sqlite, config, jobs);
    return jobs.map((job) => {
      const view = jobSummaryView(job);
      if (view.status === 'queued') view.reason = reasons.get(job.id) ?? null;
      return view;
    });
  });
}
