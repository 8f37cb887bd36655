/**
 * JSON Schema (TypeBox) of the pipeline file as written in YAML. The loader checks a parsed
 * file against it, then resolves defaults and cross-references into the types of types.ts.
 */
import { Type, type Static } from '@sinclair/typebox';
import { DURATION, ENV_NAME_PATTERN, JOB_TYPE_PATTERN } from './schema-common.js';
import {
  HEALTH_CHECK_NAME_PATTERN,
  HEALTH_CHECK_TYPES,
  HealSchema,
  ThresholdsSchema,
} from './health-schema.js';

/** The smallest memory limit the Docker engine accepts for a container (6 MiB). */
export const MIN_MEMORY_BYTES = 6 * 1024 * 1024;

export { DURATION, ENV_NAME_PATTERN, JOB_TYPE_PATTERN } from './schema-common.js';
/** A record whose keys must match its key pattern; TypeBox leaves other keys allowed. */
const CLOSED_RECORD = { additionalProperties: false } as const;
const SCALAR = Type.Union([Type.String(), Type.Number(), Type.Boolean()], {
  description: 'must be a string, number or boolean',
});

const StepSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    run: Type.String({ minLength: 1 }),
  },
  { additionalProperties: false },
);

const MatrixAxisSchema = Type.Union([
  Type.Array(Type.Union([Type.String(), Type.Number()]), { minItems: 1, maxItems: 64 }),
  Type.Object(
    {
      from: Type.Optional(Type.String({ pattern: ENV_NAME_PATTERN })),
      default: Type.Optional(
        Type.Array(Type.Union([Type.String(), Type.Number()]), { minItems: 1, maxItems: 64 }),
      ),
    },
    { additionalProperties: false },
  ),
]);

const SecretSchema = Type.Union([
  Type.String({ pattern: ENV_NAME_PATTERN }),
  Type.Object(
    {
      name: Type.String({ pattern: ENV_NAME_PATTERN }),
      from_env: Type.Optional(Type.String({ pattern: ENV_NAME_PATTERN })),
      from_file: Type.Optional(Type.String({ minLength: 1 })),
    },
    { additionalProperties: false },
  ),
]);

const PipelineSchema = Type.Object(
  {
    executor: Type.Optional(
      Type.Union([Type.Literal('docker'), Type.Literal('local')], {
        description: 'must be one of docker, local',
      }),
    ),
    image: Type.Optional(Type.String({ minLength: 1 })),
    steps: Type.Array(StepSchema, { minItems: 1, maxItems: 200 }),
    matrix: Type.Optional(
      Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), MatrixAxisSchema, CLOSED_RECORD),
    ),
    env: Type.Optional(
      Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), SCALAR, CLOSED_RECORD),
    ),
    secrets: Type.Optional(Type.Array(SecretSchema)),
    timeout: Type.Optional(DURATION),
    retries: Type.Optional(Type.Integer({ minimum: 0, maximum: 10 })),
    side_effects: Type.Optional(Type.Boolean()),
    concurrency: Type.Optional(
      Type.Union([
        Type.String({ minLength: 1 }),
        Type.Object(
          {
            group: Type.String({ minLength: 1 }),
            cancel_in_progress: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
      ]),
    ),
    needs: Type.Optional(Type.Array(Type.String({ pattern: JOB_TYPE_PATTERN }))),
    trigger_needs: Type.Optional(Type.Boolean()),
    dependency_timeout: Type.Optional(DURATION),
    network: Type.Optional(Type.String({ minLength: 1 })),
    // The loader checks the text form further (see describeUserProblem).
    user: Type.Optional(
      Type.Union([Type.String(), Type.Integer({ minimum: 0 })], {
        description: 'must be a user name or uid, with an optional ":group" or ":gid", or worker',
      }),
    ),
    resources: Type.Optional(
      Type.Object(
        {
          memory: Type.Optional(
            Type.Union([
              // Both forms are checked against MIN_MEMORY_BYTES by the loader, with one message.
              Type.Integer({ minimum: 0 }),
              Type.String({ pattern: '^\\d+(\\.\\d+)?[kKmMgG]?[bB]?$' }),
            ]),
          ),
          cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1024 })),
          pids: Type.Optional(Type.Integer({ minimum: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    on_success: Type.Optional(
      Type.Object(
        {
          state: Type.Optional(
            Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), SCALAR, CLOSED_RECORD),
          ),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

const RecoverySchema = Type.Object(
  {
    action: Type.Union([
      Type.Literal('restart_container'),
      Type.Literal('rerun_failed'),
      Type.Literal('run_pipeline'),
    ]),
    container: Type.Optional(Type.String({ minLength: 1 })),
    pipeline: Type.Optional(Type.String({ pattern: JOB_TYPE_PATTERN })),
    description: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

const HealthCheckSchema = Type.Object(
  {
    name: Type.String({
      pattern: HEALTH_CHECK_NAME_PATTERN,
      description: 'must be lower case letters, digits, ".", "_" or "-", starting with a letter',
    }),
    type: Type.Union(
      HEALTH_CHECK_TYPES.map((type) => Type.Literal(type)),
      { description: `must be one of ${HEALTH_CHECK_TYPES.join(', ')}` },
    ),
    interval: Type.Optional(DURATION),
    timeout: Type.Optional(DURATION),
    thresholds: Type.Optional(ThresholdsSchema),
    heal: Type.Optional(HealSchema),
  },
  // The settings of each check type (url, port, containers...) are checked against that
  // type's schema in health-schema.ts once the type is known.
  { additionalProperties: true },
);

export const PipelineFileSchema = Type.Object(
  {
    repository: Type.Optional(Type.String({ minLength: 1 })),
    pipelines: Type.Record(
      Type.String({ pattern: JOB_TYPE_PATTERN }),
      PipelineSchema,
      CLOSED_RECORD,
    ),
    recovery: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^[a-z][a-z0-9_-]{0,62}$' }),
        RecoverySchema,
        CLOSED_RECORD,
      ),
    ),
    health_checks: Type.Optional(Type.Array(HealthCheckSchema)),
  },
  { additionalProperties: false },
);

export type RawPipelineFile = Static<typeof PipelineFileSchema>;
export type RawPipeline = Static<typeof PipelineSchema>;
export type RawHealthCheck = Static<typeof HealthCheckSchema>;
