import { IsNotEmpty, IsOptional, IsString, MaxLength } from 'class-validator';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import {
  DATACENTER_PATTERN,
  IsDatacenter,
  IsHost,
  IsPort,
  IsServiceId,
  IsServiceMeta,
  IsServiceName,
  IsServiceTags,
  SERVICE_NAME_PATTERN,
} from './field.rules.js';
import {
  readHealthCheck,
  setCheckDurations,
  type HealthCheckSettings,
} from './health-check.rules.js';
import {
  copyMeta,
  copyTags,
  isPlainObject,
  readInto,
  ReadWith,
  ViolationCollector,
} from './input.reader.js';
import type { DiscoveryQuery, ServiceRegistration } from './service-discovery.protocol.js';

/** `register()`'s argument, validated like the settings' `service` section. */
export class RegistrationArguments {
  @IsServiceName()
  name: string;

  @IsServiceId()
  serviceId: string;

  @IsPort()
  port: number;

  @IsOptional()
  @IsHost()
  address?: string;

  @IsServiceTags()
  tags: string[] = [];

  @IsServiceMeta()
  meta: Record<string, string> = {};

  @ReadWith(readHealthCheck)
  healthCheck?: HealthCheckSettings;
}

class NameArgument {
  @IsServiceName()
  name: string;
}

class ServiceIdArgument {
  @IsServiceId()
  serviceId: string;
}

class QueryArgument {
  @IsOptional()
  @IsString()
  @IsNotEmpty()
  @MaxLength(255)
  tag?: string;

  @IsOptional()
  @IsDatacenter()
  datacenter?: string;
}

function fail(out: ViolationCollector, subject: string): void {
  if (!out.empty) throw new DiscoverySettingsError(out.violations, subject);
}

/**
 * Validates `register()`'s argument (throws before any I/O) and returns a private copy. `path`
 * and `subject` name it for other callers (the in-memory double's instances).
 */
export function readRegistration(
  input: ServiceRegistration,
  path = 'registration',
  subject = 'register() arguments',
): RegistrationArguments {
  const out = new ViolationCollector();
  if (!isPlainObject(input)) {
    out.add(path, `${path} must be an object with name, serviceId and port`);
    fail(out, subject);
  }
  const args = readInto(new RegistrationArguments(), input, path, out);
  out.validate(args, path);
  fail(out, subject);
  args.tags = copyTags(args.tags);
  args.meta = copyMeta(args.meta);
  if (args.healthCheck) setCheckDurations(args.healthCheck);
  return args;
}

export function checkServiceId(serviceId: unknown, subject = 'deregister() arguments'): string {
  const out = new ViolationCollector();
  out.validate(Object.assign(new ServiceIdArgument(), { serviceId }), '');
  fail(out, subject);
  return serviceId as string;
}

const EMPTY_QUERY: DiscoveryQuery = Object.freeze({});

/** The hot path ("who is alive?" on every message): plain checks, no class-validator. */
function isValidQuery(query: unknown): query is DiscoveryQuery {
  if (!isPlainObject(query)) return false;
  for (const key in query) {
    const value = query[key];
    if (key === 'tag') {
      if (value !== undefined && (typeof value !== 'string' || !value || value.length > 255)) {
        return false;
      }
    } else if (key === 'datacenter') {
      if (value !== undefined && (typeof value !== 'string' || !DATACENTER_PATTERN.test(value))) {
        return false;
      }
    } else return false;
  }
  return true;
}

export function checkDiscoverQuery(name: unknown, query: unknown): DiscoveryQuery {
  if (typeof name === 'string' && SERVICE_NAME_PATTERN.test(name)) {
    if (query === undefined) return EMPTY_QUERY;
    if (isValidQuery(query)) return query;
  }
  // Something is wrong: class-validator names every bad field.
  const out = new ViolationCollector();
  out.validate(Object.assign(new NameArgument(), { name }), '');
  const args = readInto(new QueryArgument(), query, 'query', out);
  out.validate(args, 'query');
  fail(out, 'discover() arguments');
  const result: DiscoveryQuery = {};
  if (args.tag !== undefined) result.tag = args.tag;
  if (args.datacenter !== undefined) result.datacenter = args.datacenter;
  return result;
}
