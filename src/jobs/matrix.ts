import type { MatrixAxis } from '../pipeline/types.js';
import { firstUnprintable } from '../util/printable.js';

/** Upper bound on tasks per job, so one trigger cannot flood the queue. */
export const MAX_MATRIX_COMBINATIONS = 256;

export class MatrixError extends Error {
  constructor(
    readonly field: string,
    message: string,
    /** Rule of the API's 400 response. */
    readonly rule: 'matrix' | 'printable' | 'type' = 'matrix',
  ) {
    super(message);
  }
}

/**
 * Expands the matrix axes into one combination per task. An axis takes its values from the
 * trigger field it names (`inputs[axis.from]`), else from that key of `params`, else from its
 * defaults. Errors name a value from params by its path in the body, `params.<field>`.
 */
export function expandMatrix(
  axes: readonly MatrixAxis[],
  inputs: Record<string, unknown>,
  params: Record<string, unknown> = {},
): Array<Record<string, string>> {
  let combinations: Array<Record<string, string>> = [{}];
  for (const axis of axes) {
    const source = axisSource(axis, inputs, params);
    const values = axisValues(axis, source);
    const next: Array<Record<string, string>> = [];
    for (const combination of combinations) {
      for (const value of values) next.push({ ...combination, [axis.name]: value });
    }
    if (next.length > MAX_MATRIX_COMBINATIONS) {
      throw new MatrixError(
        source.field ?? axis.name,
        `the matrix expands to more than ${MAX_MATRIX_COMBINATIONS} tasks`,
      );
    }
    combinations = next;
  }
  return combinations;
}

/** An axis's values as the trigger sent them, and the path of their field in the body. */
interface AxisSource {
  supplied: unknown;
  field: string | undefined;
}

function axisSource(
  axis: MatrixAxis,
  inputs: Record<string, unknown>,
  params: Record<string, unknown>,
): AxisSource {
  if (axis.from === undefined) return { supplied: undefined, field: undefined };
  if (Object.hasOwn(inputs, axis.from)) return { supplied: inputs[axis.from], field: axis.from };
  if (params[axis.from] === undefined) return { supplied: undefined, field: axis.from };
  return { supplied: params[axis.from], field: `params.${axis.from}` };
}

function axisValues(axis: MatrixAxis, { supplied, field: path }: AxisSource): string[] {
  if (supplied === undefined || supplied === null) {
    // Without values the job would get no task. Such a job stays queued for good, because no
    // worker claims it and a cancel cannot end it.
    if (axis.values.length === 0) {
      throw new MatrixError(
        axis.from!,
        `${axis.from} is required: matrix axis ${axis.name} has no default, so send its ` +
          `values as "${axis.from}" in the body or in params`,
      );
    }
    return axis.values;
  }
  const list = Array.isArray(supplied) ? supplied : [supplied];
  if (list.length === 0) {
    throw new MatrixError(path!, `${path} must not be an empty list`);
  }
  const fieldOf = (index: number) => (Array.isArray(supplied) ? `${path}.${index}` : path!);
  list.forEach((value, index) => {
    // Params may hold any JSON, and String() would turn an object into "[object Object]", a
    // nested list into its items joined by commas, and null into "null". A boolean becomes
    // "true" or "false".
    if (value === null || typeof value === 'object') {
      const field = fieldOf(index);
      const kind = value === null ? 'null' : Array.isArray(value) ? 'a list' : 'an object';
      throw new MatrixError(
        field,
        `${field} is ${kind}; a matrix value must be a string, a whole number or a boolean`,
        'type',
      );
    }
    if (typeof value === 'number' && !Number.isInteger(value)) {
      throw new MatrixError(
        `${path}.${index}`,
        `${path}.${index} is the JSON number ${value}, and JSON numbers drop trailing ` +
          'zeros (3.10 reads as 3.1); send matrix values that are not whole numbers as strings',
      );
    }
  });
  const values = list.map(String);
  values.forEach((value, index) => {
    // A value names its task (`ci (3.12)`) in log lines and reasons, where a line break or
    // escape sequence could forge or hide output, and an environment variable cannot hold NUL.
    const unprintable = firstUnprintable(value);
    if (unprintable === undefined) return;
    const field = fieldOf(index);
    const code = unprintable.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    throw new MatrixError(
      field,
      `${field} contains U+${code}, a control character or line separator; a matrix value names ` +
        'its task in logs and reaches the steps as an environment variable, so send printable ' +
        'text (tab is allowed)',
      'printable',
    );
  });
  return [...new Set(values)];
}

/** The task's display name: the job type plus its matrix values, e.g. `ci (3.11)`. */
export function taskName(type: string, matrix: Record<string, string>): string {
  const values = Object.values(matrix);
  return values.length === 0 ? type : `${type} (${values.join(', ')})`;
}
