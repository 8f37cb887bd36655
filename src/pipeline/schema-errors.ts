/**
 * Turns TypeBox validation errors of the pipeline file into problems that name the deepest
 * field and the rule it breaks, and records which fields failed so that the loader skips only
 * the cross-reference checks that read them.
 */
import type { TObject, TRecord, TSchema, TString, TUnion } from '@sinclair/typebox';
import { Value, ValueErrorType, type ValueError } from '@sinclair/typebox/value';
import { DURATION } from './schema-common.js';

/** Errors that mean the value has the wrong kind (a string where a boolean belongs). */
const KIND_ERRORS = new Set([
  ValueErrorType.Array,
  ValueErrorType.Boolean,
  ValueErrorType.Integer,
  ValueErrorType.Literal,
  ValueErrorType.Null,
  ValueErrorType.Number,
  ValueErrorType.Object,
  ValueErrorType.String,
]);

export interface SchemaFailure {
  /** Path segments of the field, e.g. `['pipelines', 'ci', 'concurrency']`. */
  segments: string[];
  message: string;
}

/** Checks `value` against `schema` and returns one failure per field, in the schema's order. */
export function findSchemaFailures(schema: TSchema, value: unknown): SchemaFailure[] {
  const seen = new Set<string>();
  const failures: SchemaFailure[] = [];
  for (const error of expandUnionErrors(Value.Errors(schema, value))) {
    // A field can break several rules, such as a minimum and a pattern, and the first is enough.
    if (seen.has(error.path)) continue;
    seen.add(error.path);
    const segments = error.path
      .split('/')
      .slice(1)
      .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'));
    const message = describeSchemaError(error);
    // The value of an unknown field is not what broke the rule: its name is.
    const unknownField = error.type === ValueErrorType.ObjectAdditionalProperties;
    failures.push({ segments, message: unknownField ? message : withValue(message, error.value) });
  }
  return failures;
}

/**
 * Replaces each error of a union without its own description by the errors of the one member
 * that has the value's kind, so `cancel_in_progress: maybe` inside `concurrency` (a string or
 * an object) is reported at `concurrency.cancel_in_progress` as not a boolean. A union error
 * stays as it is when no member, or more than one, has the value's kind.
 */
export function* expandUnionErrors(errors: Iterable<ValueError>): Generator<ValueError> {
  for (const error of errors) {
    const member =
      error.type === ValueErrorType.Union && !hasDescription(error.schema)
        ? memberOfSameKind(error)
        : undefined;
    if (member === undefined) yield error;
    else yield* expandUnionErrors(member);
  }
}

function memberOfSameKind(error: ValueError): ValueError[] | undefined {
  const members = error.errors.map((iterator) => [...iterator]);
  const sameKind = members.filter(
    (memberErrors) =>
      !memberErrors.some((inner) => inner.path === error.path && KIND_ERRORS.has(inner.type)),
  );
  return sameKind.length === 1 ? sameKind[0] : undefined;
}

function hasDescription(schema: TSchema): boolean {
  return (schema as { description?: string }).description !== undefined;
}

/** Maximum length, in characters, of a value that a message repeats. */
const MAX_VALUE_IN_MESSAGE = 60;

/** Adds the value that broke the rule to `message`, unless it is not a scalar or is there. */
function withValue(message: string, value: unknown): string {
  if (message.includes(', got ')) return message;
  if (typeof value === 'number' || typeof value === 'boolean') return `${message}, got ${value}`;
  if (typeof value !== 'string') return message;
  const excerpt =
    value.length > MAX_VALUE_IN_MESSAGE ? `${value.slice(0, MAX_VALUE_IN_MESSAGE)}...` : value;
  return `${message}, got ${JSON.stringify(excerpt)}`;
}

export function describeSchemaError(error: ValueError): string {
  // Type.Optional copies the schema, so the duration union is recognized by its description.
  const isDuration = error.schema.description === DURATION.description;
  if (isDuration && typeof error.value === 'number' && error.value <= 0) {
    return `must be positive, got ${error.value}; write a duration such as 90 (seconds), 90s or 20m`;
  }
  const description = (error.schema as { description?: string }).description;
  if (description !== undefined) return description;
  if (error.type === ValueErrorType.ObjectAdditionalProperties) {
    return describeUnknownKey(error.schema as TObject | TRecord);
  }
  if (error.type === ValueErrorType.ObjectRequiredProperty) return 'is required';
  if (error.type === ValueErrorType.Union) return describeUnion(error.schema as TUnion);
  if (KIND_ERRORS.has(error.type)) return `must be ${describeKind(error.schema)}`;
  if (error.type === ValueErrorType.StringPattern) {
    return `must match the pattern ${String((error.schema as TString).pattern)}`;
  }
  return error.message.charAt(0).toLowerCase() + error.message.slice(1);
}

/**
 * Describes a key that its object does not allow: a name that breaks a record's key pattern,
 * or a field that a fixed object does not have.
 */
function describeUnknownKey(schema: TObject | TRecord): string {
  const patterns = Object.keys((schema as TRecord).patternProperties ?? {});
  if (patterns.length > 0) {
    return `is not a valid name: names must match the pattern ${patterns.join(' or ')}`;
  }
  const fields = Object.keys((schema as TObject).properties ?? {});
  return `is not a known field; allowed fields: ${fields.join(', ')}`;
}

function describeUnion(schema: TUnion): string {
  const members = schema.anyOf;
  if (members.every((member) => 'const' in member)) {
    return `must be one of ${members.map((member) => String(member.const)).join(', ')}`;
  }
  const kinds = [...new Set(members.map(describeKind))];
  return `must be ${kinds.slice(0, -1).join(', ')}${kinds.length > 1 ? ' or ' : ''}${kinds.at(-1)}`;
}

/** Names the kind of value that `schema` takes, with an article: "a boolean", "a list". */
function describeKind(schema: TSchema): string {
  if ('const' in schema) return JSON.stringify(schema.const);
  switch ((schema as { type?: string }).type) {
    case 'string':
      return 'a string';
    case 'integer':
      return 'an integer';
    case 'number':
      return 'a number';
    case 'boolean':
      return 'a boolean';
    case 'null':
      return 'null';
    case 'array':
      return 'a list';
    case 'object': {
      const fields = Object.keys((schema as TObject).properties ?? {});
      return fields.length === 0 ? 'a map' : `a map with the fields ${fields.join(', ')}`;
    }
    default:
      return 'a valid value';
  }
}

/**
 * Paths of the fields that failed the schema. The loader consults it before a cross-reference
 * check, because a field that failed may not have the type the check expects.
 */
export class FailedFields {
  private readonly paths: string[];

  constructor(failures: readonly SchemaFailure[]) {
    this.paths = failures.map((failure) => failure.segments.join('.'));
  }

  /** Returns whether the field itself or a field that contains it failed. */
  at(segments: readonly (string | number)[]): boolean {
    const path = segments.join('.');
    return this.paths.some(
      (failed) => failed === '' || failed === path || path.startsWith(`${failed}.`),
    );
  }

  /** Returns whether the field, a field that contains it or a field inside it failed. */
  within(segments: readonly (string | number)[]): boolean {
    const path = segments.join('.');
    return this.at(segments) || this.paths.some((failed) => failed.startsWith(`${path}.`));
  }
}
