import {
  ArrayMaxSize,
  IsArray,
  IsInt,
  IsNotEmpty,
  IsOptional,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
} from 'class-validator';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import type {
  DiscoveryQuery,
  ServiceRegistration,
} from '../protocol/service-discovery.protocol.js';
import type { HealthCheckSettings } from './health-check.settings.js';
import {
  IsHost,
  IsServiceMeta,
  SERVICE_ID_PATTERN,
  SERVICE_NAME_PATTERN,
} from './settings.validators.js';
import {
  copyMeta,
  copyTags,
  isPlainObject,
  readHealthCheck,
  readSection,
  ViolationCollector,
} from './settings-validation.js';

const NAME_MESSAGE = '$property must be a DNS label (letters, digits, hyphens; at most 63)';
const ID_MESSAGE = '$property must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$';

/** `register()`'s argument, validated like the settings' `service` section. */
export class RegistrationArguments {
  @IsString()
  @Matches(SERVICE_NAME_PATTERN, { message: NAME_MESSAGE })
  name: string;

  @IsString()
  @Matches(SERVICE_ID_PATTERN, { message: ID_MESSAGE })
  serviceId: string;

  @IsInt()
  @Min(1)
  @Max(65535)
  port: number;

  @IsOptional()
  @IsHost()
  address?: string;

  @IsArray()
  @ArrayMaxSize(64)
  @IsString({ each: true })
  @IsNotEmpty({ each: true })
  @MaxLength(255, { each: true })
  tags: string[];

  @IsServiceMeta()
  meta: Record<string, string>;

  healthCheck?: HealthCheckSettings;
}

class NameArgument {
  @IsString()
  @Matches(SERVICE_NAME_PATTERN, { message: NAME_MESSAGE })
  name: string;
}

class ServiceIdArgument {
  @IsString()
  @Matches(SERVICE_ID_PATTERN, { message: ID_MESSAGE })
  serviceId: string;
}

class QueryArgument {
  @IsOptional()
  @IsString()
  @IsNotEmpty()
  @MaxLength(255)
  tag?: string;

  @IsOptional()
  @IsString()
  @Matches(/^[A-Za-z0-9_-]{1,64}$/, { message: '$property must be a datacenter name' })
  datacenter?: string;
}

const REGISTRATION_KEYS = ['name', 'serviceId', 'port', 'address', 'tags', 'meta', 'healthCheck'];

function fail(out: ViolationCollector, subject: string): void {
  if (!out.empty) throw new DiscoverySettingsError(out.violations, subject);
}

/** Validates `register()`'s argument (throws before any I/O) and returns a private copy. */
export function readRegistration(input: ServiceRegistration): RegistrationArguments {
  const out = new ViolationCollector();
  const args = readSection(
    input,
    'registration',
    RegistrationArguments,
    REGISTRATION_KEYS,
    { tags: [], meta: {} },
    out,
  );
  if (!isPlainObject(input)) fail(out, 'register() arguments');
  out.validate(args, 'registration');
  const raw = input as unknown as Record<string, unknown>;
  if (raw.healthCheck !== undefined) {
    args.healthCheck = readHealthCheck(raw.healthCheck, 'registration.healthCheck', out);
  }
  fail(out, 'register() arguments');
  args.tags = copyTags(args.tags);
  args.meta = copyMeta(args.meta);
  return args;
}

export function checkServiceId(serviceId: unknown): string {
  const out = new ViolationCollector();
  out.validate(Object.assign(new ServiceIdArgument(), { serviceId }), '');
  fail(out, 'deregister() arguments');
  return serviceId as string;
}

export function checkDiscoverQuery(name: unknown, query: unknown): DiscoveryQuery {
  const out = new ViolationCollector();
  out.validate(Object.assign(new NameArgument(), { name }), '');
  const args = readSection(query, 'query', QueryArgument, ['tag', 'datacenter'], {}, out);
  out.validate(args, 'query');
  fail(out, 'discover() arguments');
  const result: DiscoveryQuery = {};
  if (args.tag !== undefined) result.tag = args.tag;
  if (args.datacenter !== undefined) result.datacenter = args.datacenter;
  return result;
}
