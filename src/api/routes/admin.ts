/** Listing jobs with filters and cursor paging, and reading the audit trail. */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import type { Status } from '../../jobs/status.js';
import { listAudit } from '../../store/audit.js';
import { listJobs } from '../../store/jobs.js';
import { parseJsonColumn } from '../../store/json.js';
import { ApiError } from '../errors.js';
import { parseQueryTime } from '../query.js';
import { jobSummaryView } from '../job-view.js';
import { ErrorSchema, JobSummarySchema, StatusSchema } from '../schemas.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema };

const JobListQuery = Type.Object(
  {
    status: Type.Optional(StatusSchema),
    type: Type.Optional(Type.String({ pattern: '^[a-z][a-z0-9-]{0,62}$' })),
    branch: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    commit: Type.Optional(
      Type.String({ pattern: '^[0-9a-fA-F]{4,64}$', description: 'a commit SHA or its prefix' }),
    ),
    limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
    cursor: Type.Optional(
      Type.String({ maxLength: 200, description: 'next_cursor of the previous page' }),
    ),
  },
  { additionalProperties: false },
);

const AuditQuery = Type.Object(
  {
    action: Type.Optional(Type.String({ pattern: '^[a-z_.]{1,64}$' })),
    job_id: Type.Optional(Type.String({ maxLength: 80 })),
    since: Type.Optional(Type.String({ format: 'date-time' })),
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
    cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,18}$' })),
  },
  { additionalProperties: false },
);

const AuditEntrySchema = Type.Object({
  id: Type.Integer(),
  action: Type.String(),
  actor: Type.String(),
  job_id: Type.Union([Type.String(), Type.Null()]),
  task_id: Type.Union([Type.String(), Type.Null()]),
  request_id: Type.Union([Type.String(), Type.Null()]),
  source: Type.Union([Type.String(), Type.Null()]),
  details: Type.Unknown(),
  created_at: Type.String(),
});

export function encodeCursor(createdAt: string, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

export function decodeCursor(cursor: string): { createdAt: string; id: string } {
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (
      Array.isArray(value) &&
      value.length === 2 &&
      typeof value[0] === 'string' &&
      typeof value[1] === 'string'
    ) {
      return { createdAt: value[0], id: value[1] };
    }
  } catch {
    // Falls through to the error below.
  }
  throw new ApiError(
    'validation_failed',
    'cursor is not one this server gave out; pass next_cursor from the previous page',
    'cursor',
    'format',
  );
}

export function registerAdminRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/admin/jobs',
    {
      schema: {
        tags: ['admin'],
        summary: 'List jobs, newest first, with filters and cursor paging',
        security: [{ bearerAuth: [] }],
        querystring: JobListQuery,
        response: {
          200: Type.Object({
            jobs: Type.Array(JobSummarySchema),
            count: Type.Integer(),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errors,
        },
      },
      config: { roles: ['read', 'trigger'] },
    },
    async (request) => {
      const query = request.query as {
        status?: Status;
        type?: string;
        branch?: string;
        commit?: string;
        limit: number;
        cursor?: string;
      };
      const rows = await listJobs(context.store.db, {
        status: query.status,
        type: query.type,
        branch: query.branch,
        commit: query.commit,
        before: query.cursor === undefined ? undefined : decodeCursor(query.cursor),
        limit: query.limit + 1,
      });
      const page = rows.slice(0, query.limit);
      const last = page.at(-1);
      return {
        jobs: page.map(jobSummaryView),
        count: page.length,
        next_cursor:
          rows.length > query.limit && last !== undefined
            ? encodeCursor(last.created_at, last.id)
            : null,
      };
    },
  );

  app.get(
    '/api/admin/audit-log',
    {
      schema: {
        tags: ['admin'],
        summary: 'The audit trail, newest first',
        security: [{ bearerAuth: [] }],
        querystring: AuditQuery,
        response: {
          200: Type.Object({
            entries: Type.Array(AuditEntrySchema),
            count: Type.Integer(),
            next_cursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errors,
        },
      },
      config: { roles: ['admin'] },
    },
    async (request) => {
      const query = request.query as {
        action?: string;
        job_id?: string;
        since?: string;
        limit: number;
        cursor?: string;
      };
      const rows = await listAudit(context.store.db, {
        action: query.action,
        jobId: query.job_id,
        since:
          query.since === undefined
            ? undefined
            : parseQueryTime(query.since, 'since').toISOString(),
        beforeId: query.cursor === undefined ? undefined : Number(query.cursor),
        limit: query.limit + 1,
      });
      const page = rows.slice(0, query.limit);
      return {
        entries: page.map((row) => ({
          ...row,
          details: parseJsonColumn<unknown>(row.details, {}),
        })),
        count: page.length,
        next_cursor: rows.length > query.limit ? String(page.at(-1)!.id) : null,
      };
    },
  );
}
