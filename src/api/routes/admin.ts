/** Listing jobs with filters and cursor paging, and reading the audit trail. */
import { createHash } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../../app/context.js';
import type { Status } from '../../jobs/status.js';
import { listAudit } from '../../store/audit.js';
import { parseJsonColumn } from '../../store/json.js';
import { ApiError } from '../errors.js';
import { parseQueryTime } from '../query.js';
import { readJobListView } from '../job-view.js';
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
      Type.String({
        maxLength: 200,
        description: 'next_cursor of the previous page, sent with the same filters',
      }),
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

/** The filters of a job listing that a cursor continues. `limit` may change between pages. */
export interface JobListFilters {
  status?: Status | undefined;
  type?: string | undefined;
  branch?: string | undefined;
  commit?: string | undefined;
}

/**
 * Returns a short hash of the filters, which a cursor carries so that it is rejected with other
 * filters. The commit prefix is lowercased because the filter matches it case-insensitively.
 * The cursor is not signed, so the hash catches a client's mistake, not a forged cursor.
 */
function hashFilters(filters: JobListFilters): string {
  const values = [
    filters.status ?? null,
    filters.type ?? null,
    filters.branch ?? null,
    filters.commit?.toLowerCase() ?? null,
  ];
  return createHash('sha256').update(JSON.stringify(values)).digest('base64url').slice(0, 12);
}

/** Encodes the position after the last job of a page, bound to the listing's filters. */
export function encodeCursor(createdAt: string, id: string, filters: JobListFilters): string {
  return Buffer.from(JSON.stringify([createdAt, id, hashFilters(filters)])).toString('base64url');
}

/**
 * Decodes a cursor that encodeCursor made for the same filters. Throws 400 for any other text,
 * including the position-only cursors of earlier versions, and for a cursor of other filters.
 */
export function decodeCursor(
  cursor: string,
  filters: JobListFilters,
): { createdAt: string; id: string } {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    value = undefined;
  }
  if (
    !Array.isArray(value) ||
    value.length !== 3 ||
    !value.every((item) => typeof item === 'string')
  ) {
    throw new ApiError(
      'validation_failed',
      'cursor is not one this server gave out; pass next_cursor from the previous page',
      'cursor',
      'format',
    );
  }
  const [createdAt, id, filtersHash] = value as [string, string, string];
  if (filtersHash !== hashFilters(filters)) {
    throw new ApiError(
      'validation_failed',
      'cursor was issued for other filters; send the status, type, branch and commit of the ' +
        'request that returned it, or leave out cursor to list from the first page',
      'cursor',
      'sameFilters',
    );
  }
  return { createdAt, id };
}

export function registerAdminRoutes(app: FastifyInstance, context: AppContext): void {
  app.get(
    '/api/admin/jobs',
    {
      schema: {
        tags: ['admin'],
        summary: 'List jobs, newest first, with filters and cursor paging',
        description:
          'Each job has the fields of `GET /api/job/{job_id}` except `tasks`. As there, a ' +
          "queued job's `reason` is worked out when the listing is read. It names the job of " +
          'its concurrency group that goes first, or says why no worker may claim the job, and ' +
          'is null when one may.',
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
      const filters: JobListFilters = {
        status: query.status,
        type: query.type,
        branch: query.branch,
        commit: query.commit,
      };
      const views = readJobListView(context.store, context.config, {
        ...filters,
        before: query.cursor === undefined ? undefined : decodeCursor(query.cursor, filters),
        limit: query.limit + 1,
      });
      const page = views.slice(0, query.limit);
      const last = page.at(-1);
      return {
        jobs: page,
        count: page.length,
        next_cursor:
          views.length > query.limit && last !== undefined
            ? encodeCursor(last.created_at, last.id, filters)
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
