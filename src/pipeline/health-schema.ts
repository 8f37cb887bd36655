/**
 * Schema of the `health_checks` section: the fields every check has, the self-healing action,
 * and one settings schema per check type. The loader first checks the common fields, then the
 * remaining keys against the settings schema of the check's type, so an error names the field
 * of that type (for example `health_checks.0.port`).
 */
import { Type, type Static, type TObject } from '@sinclair/typebox';
import { DURATION, ENV_NAME_PATTERN, JOB_TYPE_PATTERN } from './schema-common.js';

export const HEALTH_CHECK_TYPES = [
  'http',
  'tcp',
  'database',
  'tailscale',
  'docker',
  'workers',
  'queue',
] as const;

export const HEALTH_CHECK_NAME_PATTERN = '^[a-z][a-z0-9_.-]{0,62}$';

/** Fields that every check has; the rest belong to the settings of its type. */
export const COMMON_CHECK_FIELDS = ['name', 'type', 'interval', 'timeout', 'thresholds', 'heal'];

export const HEAL_ACTIONS = ['restart_container', 'trigger_job', 'recovery_procedure'] as const;

const COUNT = Type.Integer({ minimum: 1, maximum: 1000 });

/** A size of free space: bytes, a size such as `500MB`, or a share of the disk such as `10%`. */
const SIZE = Type.Union(
  [
    Type.Integer({ minimum: 1 }),
    Type.String({ pattern: '^\\d+(\\.\\d+)?\\s*([kKmMgGtT]i?)?[bB]?$' }),
  ],
  { description: 'must be bytes or a size such as 500MB or 2GiB' },
);

const FREE_SPACE = Type.Union(
  [
    Type.Integer({ minimum: 0 }),
    Type.String({ pattern: '^\\d+(\\.\\d+)?%$' }),
    Type.String({ pattern: '^\\d+(\\.\\d+)?\\s*([kKmMgGtT]i?)?[bB]?$' }),
  ],
  { description: 'must be bytes, a size such as 500MB or 2GiB, or a percentage such as 10%' },
);

export const ThresholdsSchema = Type.Object(
  {
    down: Type.Optional(COUNT),
    up: Type.Optional(COUNT),
  },
  { additionalProperties: false },
);

export const HealSchema = Type.Object(
  {
    action: Type.Union(
      HEAL_ACTIONS.map((action) => Type.Literal(action)),
      { description: `must be one of ${HEAL_ACTIONS.join(', ')}` },
    ),
    container: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    job_type: Type.Optional(Type.String({ pattern: JOB_TYPE_PATTERN })),
    commit: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{7,64}$' })),
    commit_from_state: Type.Optional(Type.String({ pattern: ENV_NAME_PATTERN })),
    branch: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    procedure: Type.Optional(Type.String({ minLength: 1, maxLength: 63 })),
    params: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    after: Type.Optional(COUNT),
    cooldown: Type.Optional(DURATION),
    max_per_hour: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })),
  },
  { additionalProperties: false },
);

const HttpSettingsSchema = Type.Object(
  {
    url: Type.String({
      pattern: '^https?://\\S+$',
      description: 'must be an absolute http:// or https:// URL',
    }),
    method: Type.Optional(
      Type.Union([Type.Literal('GET'), Type.Literal('HEAD')], {
        description: 'must be GET or HEAD',
      }),
    ),
    expect_status: Type.Optional(
      Type.Union(
        [
          Type.Integer({ minimum: 100, maximum: 599 }),
          Type.Array(Type.Integer({ minimum: 100, maximum: 599 }), { minItems: 1 }),
        ],
        { description: 'must be an HTTP status code or a list of them' },
      ),
    ),
    expect_body: Type.Optional(Type.String({ minLength: 1 })),
    headers: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z0-9-]+$' }), Type.String(), {
        additionalProperties: false,
      }),
    ),
    degraded_latency: Type.Optional(DURATION),
  },
  { additionalProperties: false },
);

const TcpSettingsSchema = Type.Object(
  {
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    degraded_latency: Type.Optional(DURATION),
  },
  { additionalProperties: false },
);

const DatabaseSettingsSchema = Type.Object(
  {
    query: Type.Optional(Type.String({ minLength: 1 })),
    integrity_interval: Type.Optional(DURATION),
    disk_warn: Type.Optional(FREE_SPACE),
    disk_fail: Type.Optional(FREE_SPACE),
    degraded_latency: Type.Optional(DURATION),
    wal_warn: Type.Optional(SIZE),
  },
  { additionalProperties: false },
);

const TailscaleSettingsSchema = Type.Object(
  {
    socket: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);

const DockerSettingsSchema = Type.Object(
  {
    socket: Type.Optional(Type.String({ minLength: 1 })),
    containers: Type.Optional(
      Type.Array(Type.String({ pattern: '^/?[A-Za-z0-9][A-Za-z0-9_.-]*$' }), {
        minItems: 1,
        maxItems: 100,
      }),
    ),
    max_restarts: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

const WorkersSettingsSchema = Type.Object(
  {
    stale_after: Type.Optional(DURATION),
    min_online: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
  },
  { additionalProperties: false },
);

const QueueSettingsSchema = Type.Object(
  { max_wait: Type.Optional(DURATION) },
  { additionalProperties: false },
);

export const HEALTH_SETTINGS_SCHEMAS = {
  http: HttpSettingsSchema,
  tcp: TcpSettingsSchema,
  database: DatabaseSettingsSchema,
  tailscale: TailscaleSettingsSchema,
  docker: DockerSettingsSchema,
  workers: WorkersSettingsSchema,
  queue: QueueSettingsSchema,
} satisfies Record<(typeof HEALTH_CHECK_TYPES)[number], TObject>;

export type RawHeal = Static<typeof HealSchema>;
export type RawHttpSettings = Static<typeof HttpSettingsSchema>;
export type RawTcpSettings = Static<typeof TcpSettingsSchema>;
export type RawDatabaseSettings = Static<typeof DatabaseSettingsSchema>;
export type RawTailscaleSettings = Static<typeof TailscaleSettingsSchema>;
export type RawDockerSettings = Static<typeof DockerSettingsSchema>;
export type RawWorkersSettings = Static<typeof WorkersSettingsSchema>;
export type RawQueueSettings = Static<typeof QueueSettingsSchema>;
