import {
  ArrayMaxSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsNotEmpty,
  IsNumber,
  IsOptional,
  IsString,
  Matches,
  Max,
  Min,
  ValidateNested,
} from 'class-validator';
import type { HealthCheckSettings } from './health-check.settings.js';
import {
  DATACENTER_PATTERN,
  IsDuration,
  IsHost,
  IsPort,
  IsServiceId,
  IsServiceMeta,
  IsServiceName,
  IsServiceTags,
  SERVICE_NAME_PATTERN,
} from './settings.validators.js';

export class ConsulConnectionSettings {
  @IsHost()
  host: string;

  @IsPort()
  port: number;

  @IsBoolean()
  secure: boolean;

  /** Sent as `X-Consul-Token` only; never logged, never in an error message. */
  @IsOptional()
  @IsString({ message: 'consul.token must be a string' })
  @IsNotEmpty({ message: 'consul.token must not be empty' })
  token?: string;

  @IsOptional()
  @IsString()
  @Matches(DATACENTER_PATTERN, { message: '$property must be a datacenter name' })
  datacenter?: string;

  /** CA, client certificate and key: a PEM string or a path to a PEM file. */
  @IsOptional()
  @IsString()
  ca?: string;

  @IsOptional()
  @IsString()
  cert?: string;

  @IsOptional()
  @IsString()
  key?: string;

  @IsInt()
  @Min(1)
  @Max(600_000)
  timeoutMs: number;

  @IsInt()
  @Min(1)
  @Max(150)
  maxSockets: number;
}

export class ServiceSettings {
  @IsOptional()
  @IsServiceName()
  name?: string;

  @IsOptional()
  @IsServiceId()
  id?: string;

  @IsOptional()
  @IsHost()
  address?: string;

  @IsBoolean()
  preferAgentAddress: boolean;

  @IsOptional()
  @IsPort()
  port?: number;

  @IsServiceTags()
  tags: string[];

  @IsServiceMeta()
  meta: Record<string, string>;
}

export class HeartbeatSettings {
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0.05)
  @Max(0.9)
  intervalRatio: number;
}

export class RetrySettings {
  @IsInt()
  @Min(1)
  @Max(100)
  maxAttempts: number;

  @IsInt()
  @Min(1)
  @Max(600_000)
  initialDelayMs: number;

  @IsInt()
  @Min(1)
  @Max(600_000)
  maxDelayMs: number;

  @IsBoolean()
  failFast: boolean;
}

export class RateLimitSettings {
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0.01)
  @Max(10_000)
  perSecond: number;

  @IsInt()
  @Min(1)
  @Max(10_000)
  burst: number;
}

export const WATCH_CONSISTENCY = ['default', 'stale', 'consistent'] as const;
export type WatchConsistency = (typeof WATCH_CONSISTENCY)[number];

export class WatchSettings {
  @IsDuration()
  waitTime: string;

  @IsIn(WATCH_CONSISTENCY)
  consistency: WatchConsistency;

  @ValidateNested()
  rateLimit: RateLimitSettings;

  @IsInt()
  @Min(1)
  @Max(150)
  maxLongPolls: number;

  @IsArray()
  @ArrayMaxSize(10_000)
  @Matches(SERVICE_NAME_PATTERN, {
    each: true,
    message: 'each value in $property must be a service name',
  })
  services: string[];
}

/** The validated, defaulted settings every part of the module reads (`DISCOVERY_SETTINGS`). */
export class DiscoverySettings {
  @IsBoolean()
  enabled: boolean;

  @IsBoolean()
  autoRegister: boolean;

  @ValidateNested()
  consul: ConsulConnectionSettings;

  @ValidateNested()
  service: ServiceSettings;

  @ValidateNested()
  healthCheck: HealthCheckSettings;

  @ValidateNested()
  heartbeat: HeartbeatSettings;

  @ValidateNested()
  retry: RetrySettings;

  @IsInt()
  @Min(1)
  @Max(600_000)
  shutdownTimeoutMs: number;

  @ValidateNested()
  watch: WatchSettings;
}
