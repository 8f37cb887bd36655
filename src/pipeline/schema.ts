/**
 * JSON Schema (TypeBox) of the pipeline file as written in YAML. The loader checks a parsed
 * file against it, then resolves defaults and cross-references into the types of types.ts.
 */
import { Type, type Static } from '@sinclair/typebox';

export const JOB_TYPE_PATTERN = '^[a-z][a-z0-9-]{0,62}$';
export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';
const DURATION = Type.Union(
  [Type.Integer({ minimum: 1 }), Type.String({ pattern: '^(\\d+(ms|s|m|h|d)?)+$' })],
  { description: 'must be a duration such as 90 (seconds), 90s, 20m or 1h30m' },
);
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
    executor: Type.Optional(Type.Union([Type.Literal('docker'), Type.Literal('local')])),
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
    resources: Type.Optional(
      Type.Object(
        {
          memory: Type.Optional(
            Type.Union([
              Type.Integer({ minimum: 4 * 1024 * 1024 }),
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

const HealSchema = Type.Object(
  {
    action: Type.Union([Type.Literal('restart_container'), Type.Literal('recovery')]),
    container: Type.Optional(Type.String({ minLength: 1 })),
    procedure: Type.Optional(Type.String({ minLength: 1 })),
    after: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    recover_after: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    cooldown: Type.Optional(DURATION),
    max_per_hour: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })),
  },
  { additionalProperties: false },
);

const HealthCheckSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z][a-z0-9_.-]{0,62}$' }),
    type: Type.Union([
      Type.Literal('http'),
      Type.Literal('tcp'),
      Type.Literal('database'),
      Type.Literal('tailscale'),
      Type.Literal('docker'),
      Type.Literal('workers'),
    ]),
    interval: Type.Optional(DURATION),
    timeout: Type.Optional(DURATION),
    heal: Type.Optional(HealSchema),
  },
  // Each check type takes its own settings (url, port, containers...), validated by the check.
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
