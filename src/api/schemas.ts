/** TypeBox schemas shared by routes: they validate input and serialise output. */
import { Type, type Static } from '@sinclair/typebox';
import { JOB_ID_PATTERN } from '../jobs/ids.js';
import { STATUSES, STATUS_MEANINGS } from '../jobs/status.js';
import { COMMIT_PATTERN } from '../jobs/refs.js';
import { UNPRINTABLE_CLASS } from '../util/printable.js';
import { ERROR_CODES } from './errors.js';

const Nullable = <T extends ReturnType<typeof Type.String>>(schema: T) =>
  Type.Union([schema, Type.Null()]);
const Time = Type.String({ format: 'date-time', description: 'UTC ISO 8601' });

export const StatusSchema = Type.Union(
  STATUSES.map((status) => Type.Literal(status, { description: STATUS_MEANINGS[status] })),
  { description: 'job or task status' },
);

/** Description of an exit_code field sent with a status. exitCodeConflict enforces the rule. */
export const EXIT_CODE_RULE =
  '0 or left out when status is success, non-zero or left out when it is failure, any value otherwise';

/**
 * Pattern of free text that people send, such as a cancel reason: no control character other
 * than tab (C0, DEL and C1) and no line or paragraph separator (U+2028, U+2029). The text reaches
 * logs, audit rows and terminals, where a line break or escape sequence could forge or hide
 * output. Bidirectional formatting characters are accepted, because right-to-left text uses
 * them, and escaped where the text is printed (see src/util/printable.ts). The API reports a
 * mismatch with the rule `printable`, not `pattern`.
 */
export const PRINTABLE_TEXT_PATTERN = `^[^${UNPRINTABLE_CLASS}]*$`;

/**
 * Pattern of a worker's host name, labels and version: no control character, tab included (C0,
 * DEL and C1), and no line or paragraph separator. It accepts the empty string, because its
 * message names only those characters. A schema that needs text sets `minLength`.
 */
export const HOSTNAME_PATTERN = '^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$';

/** Creates the schema of a reason that a person sends: 1 to `maxLength` printable characters. */
export function PrintableReason(maxLength: number) {
  return Type.String({
    minLength: 1,
    maxLength,
    pattern: PRINTABLE_TEXT_PATTERN,
    description:
      'free text (rule printable): no control characters other than tab and no line or ' +
      'paragraph separator, so no line break, carriage return or escape',
  });
}

export const JobIdParams = Type.Object({
  job_id: Type.String({
    pattern: JOB_ID_PATTERN,
    description: 'job id: `<type>-<8 hex digits>`',
    examples: ['ci-a1b2c3d4'],
  }),
});

export const ErrorSchema = Type.Object(
  {
    error: Type.String({ description: 'what failed, naming the value and the fix' }),
    code: Type.Union(Object.keys(ERROR_CODES).map((code) => Type.Literal(code))),
    field: Type.Optional(Type.String()),
    rule: Type.Optional(Type.String()),
    request_id: Type.Optional(Type.String()),
  },
  { additionalProperties: true, $id: 'Error' },
);

export const TaskSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  matrix: Type.Record(Type.String(), Type.String()),
  status: StatusSchema,
  executor: Type.Union([Type.String(), Type.Null()]),
  worker_id: Type.Union([Type.String(), Type.Null()]),
  attempt: Type.Integer({ description: 'how often a worker claimed the task' }),
  exit_code: Type.Union([Type.Integer(), Type.Null()]),
  reason: Type.Union([Type.String(), Type.Null()]),
  cancel_requested: Type.Boolean(),
  lease_expires_at: Nullable(Time),
  queued_at: Nullable(Time),
  started_at: Nullable(Time),
  finished_at: Nullable(Time),
  logs_url: Type.String(),
});

export const JobSchema = Type.Object({
  id: Type.String(),
  type: Type.String(),
  status: StatusSchema,
  commit: Type.Union([Type.String(), Type.Null()]),
  branch: Type.Union([Type.String(), Type.Null()]),
  attempt: Type.Integer(),
  reason: Type.Union([
    Type.String({ description: 'why the job waits, or why it ended as it did' }),
    Type.Null(),
  ]),
  inputs: Type.Record(Type.String(), Type.Unknown(), {
    description: 'trigger body fields that fed matrix axes, e.g. python_versions',
  }),
  params: Type.Record(Type.String(), Type.Unknown(), { description: "the trigger body's params" }),
  github_run_id: Type.Union([Type.String(), Type.Null()]),
  github_run_attempt: Type.Union([Type.Integer(), Type.Null()]),
  requested_by: Type.Union([Type.String(), Type.Null()]),
  concurrency_group: Type.Union([Type.String(), Type.Null()]),
  created_at: Time,
  queued_at: Nullable(Time),
  started_at: Nullable(Time),
  finished_at: Nullable(Time),
  updated_at: Time,
  tasks: Type.Array(TaskSchema),
  links: Type.Object({ self: Type.String(), logs: Type.String() }),
});
export type JobView = Static<typeof JobSchema>;
export type TaskView = Static<typeof TaskSchema>;

/** A job in listings: the job without its tasks. */
export const JobSummarySchema = Type.Omit(JobSchema, ['tasks']);
export type JobSummaryView = Static<typeof JobSummarySchema>;

export const CommitSchema = Type.String({
  pattern: COMMIT_PATTERN,
  description: 'commit SHA, 7 to 64 hex digits',
  examples: ['0123456789abcdef0123456789abcdef01234567'],
});
