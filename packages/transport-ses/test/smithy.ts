import { readFileSync } from 'node:fs';

/**
 * A small checker of JSON request bodies against the published Smithy model of SES v2
 * (shared/contracts/ses/sesv2-2019-09-27.json), for the restJson1 protocol: members known,
 * required members present, types, enums, lengths, ranges and patterns as the model states them.
 * The emulator validates with its own, laxer schema; this holds our requests to AWS's.
 */
export const MODEL_PATH = '/work/shared/contracts/ses/sesv2-2019-09-27.json';

type Traits = Record<string, unknown>;
interface Shape {
  type: string;
  members?: Record<string, { target: string; traits?: Traits }>;
  member?: { target: string; traits?: Traits };
  key?: { target: string };
  value?: { target: string };
  traits?: Traits;
  input?: { target: string };
  output?: { target: string };
  errors?: { target: string }[];
}

const NS = 'com.amazonaws.sesv2#';
let shapes: Record<string, Shape> | undefined;

function model(): Record<string, Shape> {
  shapes ??= (JSON.parse(readFileSync(MODEL_PATH, 'utf8')) as { shapes: Record<string, Shape> }).shapes;
  return shapes;
}

/** A shape of the model by its short name (`SendEmail`, `MessageRejected`…). */
export function shape(name: string): Shape {
  const s = model()[NS + name];
  if (!s) throw new Error(`no shape ${name} in the SES v2 model`);
  return s;
}

/** The HTTP method and path the model binds an operation to. */
export function httpBinding(operation: string): { method: string; uri: string } {
  const http = shape(operation).traits?.['smithy.api#http'] as { method: string; uri: string };
  return { method: http.method, uri: http.uri };
}

/** The HTTP status the model gives an error shape (`smithy.api#httpError`). */
export function errorStatus(error: string): number {
  const status = shape(error).traits?.['smithy.api#httpError'];
  if (typeof status !== 'number') throw new Error(`${error} has no httpError in the model`);
  return status;
}

/** The error shapes the model lists for an operation. */
export function operationErrors(operation: string): string[] {
  return (shape(operation).errors ?? []).map((e) => e.target.replace(NS, ''));
}

const PRELUDE: Record<string, string> = {
  'smithy.api#String': 'string',
  'smithy.api#Boolean': 'boolean',
  'smithy.api#PrimitiveBoolean': 'boolean',
  'smithy.api#Integer': 'integer',
  'smithy.api#PrimitiveInteger': 'integer',
  'smithy.api#Long': 'long',
  'smithy.api#PrimitiveLong': 'long',
  'smithy.api#Double': 'double',
  'smithy.api#Float': 'float',
  'smithy.api#Blob': 'blob',
  'smithy.api#Timestamp': 'timestamp',
  'smithy.api#Document': 'document',
};

function resolve(target: string): Shape {
  if (PRELUDE[target]) return { type: PRELUDE[target]! };
  const s = model()[target];
  if (!s) throw new Error(`unknown shape ${target}`);
  return s;
}

function constraints(value: unknown, traits: Traits, path: string, errors: string[]): void {
  const length = traits['smithy.api#length'] as { min?: number; max?: number } | undefined;
  if (length) {
    const n =
      typeof value === 'string'
        ? [...value].length
        : Array.isArray(value)
          ? value.length
          : typeof value === 'object' && value
            ? Object.keys(value).length
            : undefined;
    if (n !== undefined && length.min !== undefined && n < length.min)
      errors.push(`${path}: length ${n} < ${length.min}`);
    if (n !== undefined && length.max !== undefined && n > length.max)
      errors.push(`${path}: length ${n} > ${length.max}`);
  }
  const range = traits['smithy.api#range'] as { min?: number; max?: number } | undefined;
  if (range && typeof value === 'number') {
    if (range.min !== undefined && value < range.min) errors.push(`${path}: ${value} < ${range.min}`);
    if (range.max !== undefined && value > range.max) errors.push(`${path}: ${value} > ${range.max}`);
  }
  const pattern = traits['smithy.api#pattern'] as string | undefined;
  if (pattern && typeof value === 'string' && !new RegExp(pattern, 'u').test(value)) {
    errors.push(`${path}: ${JSON.stringify(value)} does not match ${pattern}`);
  }
}

function check(value: unknown, target: string, memberTraits: Traits, path: string, errors: string[]): void {
  const s = resolve(target);
  const traits = { ...(s.traits ?? {}), ...memberTraits };
  switch (s.type) {
    case 'structure': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        errors.push(`${path}: expected an object (${target})`);
        return;
      }
      const members = s.members ?? {};
      for (const key of Object.keys(value)) {
        if (!members[key]) errors.push(`${path}.${key}: not a member of ${target.replace(NS, '')}`);
      }
      for (const [key, m] of Object.entries(members)) {
        const v = (value as Record<string, unknown>)[key];
        if (v === undefined || v === null) {
          if (m.traits?.['smithy.api#required'] !== undefined) errors.push(`${path}.${key}: required member missing`);
          continue;
        }
        check(v, m.target, m.traits ?? {}, `${path}.${key}`, errors);
      }
      break;
    }
    case 'union': {
      if (typeof value !== 'object' || value === null) {
        errors.push(`${path}: expected a union object`);
        return;
      }
      const keys = Object.keys(value);
      if (keys.length !== 1) errors.push(`${path}: a union needs exactly one member, got ${keys.length}`);
      for (const key of keys) {
        const m = s.members?.[key];
        if (!m) errors.push(`${path}.${key}: not a member of ${target}`);
        else check((value as Record<string, unknown>)[key], m.target, m.traits ?? {}, `${path}.${key}`, errors);
      }
      break;
    }
    case 'list':
    case 'set':
      if (!Array.isArray(value)) {
        errors.push(`${path}: expected a list`);
        return;
      }
      value.forEach((v, i) => {
        check(v, s.member!.target, s.member!.traits ?? {}, `${path}[${i}]`, errors);
      });
      break;
    case 'map':
      if (typeof value !== 'object' || value === null) {
        errors.push(`${path}: expected a map`);
        return;
      }
      for (const [k, v] of Object.entries(value)) {
        check(k, s.key!.target, {}, `${path}{key}`, errors);
        check(v, s.value!.target, {}, `${path}.${k}`, errors);
      }
      break;
    case 'string':
    case 'enum':
      if (typeof value !== 'string') {
        errors.push(`${path}: expected a string`);
        return;
      }
      if (s.type === 'enum') {
        const allowed = Object.values(s.members ?? {}).map(
          (m) => (m.traits?.['smithy.api#enumValue'] as string | undefined) ?? '',
        );
        if (!allowed.includes(value)) errors.push(`${path}: ${value} is not one of ${allowed.join(', ')}`);
      }
      break;
    case 'blob':
      if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
        errors.push(`${path}: a blob must be base64 in restJson1`);
      }
      break;
    case 'boolean':
      if (typeof value !== 'boolean') errors.push(`${path}: expected a boolean`);
      break;
    case 'integer':
    case 'long':
    case 'short':
    case 'byte':
      if (!Number.isInteger(value)) errors.push(`${path}: expected an integer`);
      break;
    case 'double':
    case 'float':
      if (typeof value !== 'number') errors.push(`${path}: expected a number`);
      break;
    case 'timestamp':
      if (typeof value !== 'number' && typeof value !== 'string') errors.push(`${path}: expected a timestamp`);
      break;
    default:
      break;
  }
  constraints(value, traits, path, errors);
}

/**
 * The violations of the model by a request body of `operation` (empty when it conforms). Only
 * body members are checked: SendEmail and GetAccount bind nothing to the path, query or headers.
 */
export function validateRequest(operation: string, body: unknown): string[] {
  const input = shape(operation).input?.target;
  if (!input) return [];
  const errors: string[] = [];
  check(body, input, {}, operation, errors);
  return errors;
}
