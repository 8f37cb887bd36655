/**
 * `GET /api/job/{id}/logs`: the job's task logs as plain text, one section per task. The
 * execution plane replaces this with streaming (`follow=true`); until a task has written a
 * log the answer is empty.
 */
import fs from 'node:fs/promises';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import { findJob, listCurrentTasks } from '../../store/jobs.js';
import { ApiError, jobNotFound } from '../errors.js';
import { ErrorSchema, JobIdParams } from '../schemas.js';

export const LogQuery = Type.Object(
  {
    task: Type.Optional(Type.String({ maxLength: 120, description: 'a task id or name' })),
    follow: Type.Boolean({ default: false, description: 'stream until the task ends' }),
  },
  { additionalProperties: false },
);

export function registerLogRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/job/:job_id/logs',
    {
      schema: {
        tags: ['jobs'],
        summary: "The job's logs as text; ?task= picks one task",
        security: [{ bearerAuth: [] }],
        params: JobIdParams,
        querystring: LogQuery,
        response: { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema },
      },
      config: { roles: ['read', 'trigger'] },
    },
    async (request, reply) => {
      const { job_id: id } = request.params as { job_id: string };
      const query = request.query as { task?: string };
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
      const parts: string[] = [];
      for (const task of tasks) {
        if (task.log_path === null) continue;
        const text = await fs.readFile(task.log_path, 'utf8').catch(() => '');
        parts.push(tasks.length > 1 ? `==> ${task.name} (${task.id}) <==\n${text}` : text);
      }
      reply.type('text/plain; charset=utf-8');
      return parts.join('\n');
    },
  );
}
