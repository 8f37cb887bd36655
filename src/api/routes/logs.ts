/**
 * `GET /api/job/{id}/logs`: the output of the job's tasks (current attempt) as UTF-8 text.
 * `?task=` picks one task by id or name; `?follow=true` keeps the response open and streams
 * output as workers upload it, until the task ends. With several tasks, each gets a header
 * line and they are streamed one after another, in matrix order.
 *
 * Earlier output stays readable. A task handed back or recovered runs again as a new attempt,
 * which writes a new file; `?task=<id>&attempt=<n>` reads attempt n. A retried job gets new
 * tasks, and `?task=` also takes the id of a task of an earlier job attempt.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { executionServices } from '../../dispatch/services.js';
import { readTaskLog } from '../../logs/follow.js';
import { findJob, listCurrentTasks } from '../../store/jobs.js';
import type { TaskRow } from '../../store/schema.js';
import { ApiError, jobNotFound } from '../errors.js';
import { checkJobOwner, OIDC_JOB_OWNER_NOTE } from '../job-owner.js';
import { ErrorSchema, JobIdParams } from '../schemas.js';

export const LogQuery = Type.Object(
  {
    task: Type.Optional(Type.String({ maxLength: 120, description: 'a task id or name' })),
    attempt: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          "with task: that task's attempt whose output to read (default the latest). With " +
          'follow, the stream of the latest attempt ends when a newer attempt starts, so a ' +
          'client that reconnects knows which attempt its byte count belongs to',
      }),
    ),
    follow: Type.Boolean({
      default: false,
      description: 'keep streaming new output until the task (or every task) ends',
    }),
  },
  { additionalProperties: false },
);

export function registerLogRoutes(app: FastifyInstance, context: AppContext): void {
  // Followed streams end before the server closes, since a close waits for every open
  // response; `slipway run` and `trigger --wait` open them again where they stopped.
  const followers = new Set<AbortController>();
  app.addHook('preClose', async () => {
    for (const follower of followers) follower.abort();
  });

  app.get(
    '/api/job/:job_id/logs',
    {
      schema: {
        tags: ['jobs'],
        summary: "The job's logs as text; ?task= picks one task, ?follow=true streams",
        security: [{ bearerAuth: [] }],
        params: JobIdParams,
        querystring: LogQuery,
        response: {
          200: {
            description:
              'the logs as text, task after task; with follow=true, streamed until the job ends',
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
          400: ErrorSchema,
          401: ErrorSchema,
          403: ErrorSchema,
          404: ErrorSchema,
        },
      },
      config: { roles: ['read', 'trigger'], roleNote: OIDC_JOB_OWNER_NOTE },
    },
    async (request, reply) => {
      const { job_id: id } = request.params as { job_id: string };
      const query = request.query as { task?: string; attempt?: number; follow: boolean };
      const job = await findJob(context.store.db, id);
      if (job === undefined) throw jobNotFound(id);
      const forbidden = checkJobOwner(job, request.principal, 'read the logs of');
      if (forbidden !== undefined) throw forbidden;
      let tasks = await listCurrentTasks(context.store.db, job);
      if (query.task !== undefined) {
        const requested = query.task;
        tasks = tasks.filter((task) => task.id === requested || task.name === requested);
        // A task of an earlier attempt of the job, by its id.
        if (tasks.length === 0) tasks = await listJobTasksById(context, id, requested);
        if (tasks.length === 0) {
          throw new ApiError(
            'task_not_found',
            `job ${id} has no task ${JSON.stringify(requested)}`,
            'task',
            'exists',
          );
        }
      }
      if (query.attempt !== undefined) {
        const task = tasks[0]!;
        if (query.task === undefined) {
          throw new ApiError(
            'validation_failed',
            'query parameter attempt needs task, since each task counts its own attempts',
            'attempt',
            'requires_task',
          );
        }
        if (query.attempt > Math.max(task.attempt, 1)) {
          throw new ApiError(
            'validation_failed',
            `task ${task.id} has run ${task.attempt} attempt(s); attempt ${query.attempt} does not exist`,
            'attempt',
            'maximum',
          );
        }
        if (query.attempt < Math.max(task.attempt, 1)) {
          // An earlier attempt's file no longer changes: read it whole, without following.
          const file = executionServices(context).logs.pathFor(id, task.id, query.attempt);
          reply.type('text/plain; charset=utf-8');
          reply.header('cache-control', 'no-store');
          return reply.send(Readable.from(readWholeFile(file)));
        }
      }
      const gone = new AbortController();
      followers.add(gone);
      reply.raw.once('close', () => {
        gone.abort();
        followers.delete(gone);
      });
      const options = {
        context,
        logs: executionServices(context).logs,
        follow: query.follow,
        signal: gone.signal,
        attempt: query.attempt,
      };
      reply.type('text/plain; charset=utf-8');
      reply.header('cache-control', 'no-store');
      if (query.follow) {
        reply.header('x-accel-buffering', 'no');
        // Send the headers before the first output, so a client sees the stream open at once.
        reply.raw.once('pipe', () => reply.raw.flushHeaders());
      }
      return reply.send(Readable.from(streamTasks(tasks, options)));
    },
  );
}

async function listJobTasksById(
  context: AppContext,
  jobId: string,
  taskId: string,
): Promise<TaskRow[]> {
  return context.store.db
    .selectFrom('tasks')
    .selectAll()
    .where('job_id', '=', jobId)
    .where('id', '=', taskId)
    .execute();
}

/** Yields the file's bytes, or nothing when the attempt wrote no output or its file was removed. */
async function* readWholeFile(file: string): AsyncGenerator<Buffer> {
  try {
    yield await fs.promises.readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

async function* streamTasks(
  tasks: TaskRow[],
  options: Parameters<typeof readTaskLog>[1],
): AsyncGenerator<Buffer> {
  for (const [index, task] of tasks.entries()) {
    if (tasks.length > 1) {
      yield Buffer.from(`${index === 0 ? '' : '\n'}==> ${task.name} (${task.id}) <==\n`);
    }
    yield* readTaskLog(task.id, options);
    if (options.signal.aborted) return;
  }
}
