/**
 * `GET /api/job/{id}/logs`: the output of the job's tasks (current attempt) as UTF-8 text.
 * `?task=` picks one task by id or name; `?follow=true` keeps the response open and streams
 * output as workers upload it, until the task ends. With several tasks, each gets a header
 * line and they are streamed one after another, in matrix order.
 */
import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { executionServices } from '../../dispatch/services.js';
import { readTaskLog } from '../../logs/follow.js';
import { findJob, listCurrentTasks } from '../../store/jobs.js';
import type { TaskRow } from '../../store/schema.js';
import { ApiError, jobNotFound } from '../errors.js';
import { ErrorSchema, JobIdParams } from '../schemas.js';

export const LogQuery = Type.Object(
  {
    task: Type.Optional(Type.String({ maxLength: 120, description: 'a task id or name' })),
    follow: Type.Boolean({
      default: false,
      description: 'keep streaming new output until the task (or every task) ends',
    }),
  },
  { additionalProperties: false },
);

export function registerLogRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/job/:job_id/logs',
    {
      schema: {
        tags: ['jobs'],
        summary: "The job's logs as text; ?task= picks one task, ?follow=true streams",
        security: [{ bearerAuth: [] }],
        params: JobIdParams,
        querystring: LogQuery,
        response: { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema },
      },
      config: { roles: ['read', 'trigger'] },
    },
    async (request, reply) => {
      const { job_id: id } = request.params as { job_id: string };
      const query = request.query as { task?: string; follow: boolean };
      const job = await findJob(context.store.db, id);
      if (job === undefined) throw jobNotFound(id);
      let tasks = await listCurrentTasks(context.store.db, job);
      if (query.task !== undefined) {
        tasks = tasks.filter((task) => task.id === query.task || task.name === query.task);
        if (tasks.length === 0) {
          throw new ApiError(
            'task_not_found',
            `job ${id} has no task ${JSON.stringify(query.task)}`,
            'task',
            'exists',
          );
        }
      }
      const gone = new AbortController();
      reply.raw.once('close', () => gone.abort());
      const options = {
        context,
        logs: executionServices(context).logs,
        follow: query.follow,
        signal: gone.signal,
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
