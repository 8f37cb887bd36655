/** Schema pieces shared by the pipeline file's sections. */
import { Type } from '@sinclair/typebox';

export const JOB_TYPE_PATTERN = '^[a-z][a-z0-9-]{0,62}$';
export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';
/** Maximum length of a trigger param name; each reaches the steps as SLIPWAY_PARAM_<NAME>. */
export const MAX_PARAM_NAME_LENGTH = 100;
export const DURATION = Type.Union(
  [Type.Integer({ minimum: 1 }), Type.String({ pattern: '^(\\d+(ms|s|m|h|d)?)+$' })],
  { description: 'must be a duration such as 90 (seconds), 90s, 20m or 1h30m' },
);
