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
  MaxLength,
  Min,
} from 'class-validator';
import {
  IsDatacenter,
  IsDuration,
  IsHost,
  IsPort,
  IsServiceId,
  IsServiceMeta,
  IsServiceName,
  IsServiceTags,
  SERVICE_NAME_PATTERN,
} from '../protocol/field.rules.js';
import {
  readHealthCheck,
  TtlHealthCheckSettings,
  type HealthCheckSettings,
} from '../protocol/health-check.rules.js';
import { Nested, OptionalNested, ReadWith } from '../protocol/input.reader.js';

/** PEM text, as opposed to the path of a PEM file. */
export const PEM_PATTERN = /-----BEGIN [A-Z ]+-----/;

// The property initializers are the defaults; the factory adds the env-derived and computed ones.

/** CA, client certificate and key: each a PEM string or a path to a PEM file. */
export class TlsMaterialSettings {
  @IsOptional()
  @IsString()
  ca?: string;

  @IsOptional()
  @IsString()
  cert?: string;

  @IsOptional()
  @IsString()
  key?: string;
}

export class ConsulConnectionSettings extends TlsMaterialSettings {
  /** `CONSUL_HTTP_ADDR` when set. */
  @IsHost()
  host = '127.0.0.1';

  @IsPort()
  port = 8500;

  /** `CONSUL_HTTP_ADDR` with `https://` or `CONSUL_HTTP_SSL=true` make it `true`. */
  @IsBoolean()
  secure = false;

  /** Sent as `X-Consul-Token` only; never logged, never in an error message. */
  @IsOptional()
  @IsString({ message: 'consul.token must be a string' })
  @IsNotEmpty({ message: 'consul.token must not be empty' })
  token?: string;

  /** The agent's when omitted. */
  @IsOptional()
  @IsDatacenter()
  datacenter?: string;

  @IsInt()
  @Min(1)
  @Max(600_000)
  timeoutMs = 5000;

  @IsInt()
  @Min(1)
  @Max(150)
  maxSockets = 32;
}

export class ServiceSettings {
  /** Required when `autoRegister` is true. */
  @IsOptional()
  @IsServiceName()
  name?: string;

  /** Defaults to `${name}-${hostname}-${port}`. */
  @IsOptional()
  @IsServiceId()
  id?: string;

  /** Defaults to the first non-internal IPv4 address of this host. */
  @IsOptional()
  @IsHost()
  address?: string;

  /** Omit the address so the agent's is used. */
  @IsBoolean()
  preferAgentAddress = false;

  /** Required when `autoRegister` is true. */
  @IsOptional()
  @IsPort()
  port?: number;

  @IsServiceTags()
  tags: string[] = [];

  @IsServiceMeta()
  meta: Record<string, string> = {};
}

export class HeartbeatSettings {
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0.05)
  @Max(0.9)
  intervalRatio = 1 / 3;
}

export class RetrySettings {
  @IsInt()
  @Min(1)
  @Max(100)
  maxAttempts = 6;

  @IsInt()
  @Min(1)
  @Max(600_000)
  initialDelayMs = 200;

  @IsInt()
  @Min(1)
  @Max(600_000)
  maxDelayMs = 5000;

  @IsBoolean()
  failFast = false;
}

export class RateLimitSettings {
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0.01)
  @Max(10_000)
  perSecond = 20;

  @IsInt()
  @Min(1)
  @Max(10_000)
  burst = 10;
}

export const WATCH_CONSISTENCY = ['default', 'stale', 'consistent'] as const;
export type WatchConsistency = (typeof WATCH_CONSISTENCY)[number];

export class WatchSettings {
  /** Long-poll `wait`. */
  @IsDuration()
  waitTime = '60s';

  @IsIn(WATCH_CONSISTENCY)
  consistency: WatchConsistency = 'default';

  @Nested()
  rateLimit = new RateLimitSettings();

  @IsInt()
  @Min(1)
  @Max(150)
  maxLongPolls = 64;

  @IsArray()
  @ArrayMaxSize(10_000)
  @Matches(SERVICE_NAME_PATTERN, {
    each: true,
    message: 'each value in $property must be a service name',
  })
  services: string[] = [];

  /** `waitTime` in ms, set once the settings are valid; not an input. */
  waitMs: number;
}

export const SHARDING_MODES = ['cooperative', 'exclusive'] as const;
export type ShardingMode = (typeof SHARDING_MODES)[number];

/** Meta keys self-registration publishes when sharding is on; reserved in `service.meta`. */
export const SHARD_META_KEYS = ['shardPartitions', 'shardBalance', 'shardWeight'] as const;

/** A Consul KV key prefix: segments of letters, digits, `_`, `-` and `.`, no leading slash. */
export const KV_PREFIX_PATTERN = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

export class ShardingLockSettings {
  /** KV key of partition p: `<prefix>/<service name>/<p>`. */
  @IsString()
  @MaxLength(256)
  @Matches(KV_PREFIX_PATTERN, {
    message: '$property must be a KV key prefix like athomic/sharding (no leading or trailing /)',
  })
  prefix = 'athomic/sharding';

  /** The session's `LockDelay`, always sent as a duration string. */
  @IsDuration()
  lockDelay = '5s';

  /** `lockDelay` in ms, set once the settings are valid; not an input. */
  lockDelayMs: number;
}

/** Absent: sharding is off. */
export class ShardingSettings {
  /** Fixed for the life of the keyspace. */
  @IsInt()
  @Min(1)
  @Max(65_536)
  partitions: number;

  /** `exclusive` holds a Consul lock per owned partition (requires the TTL health check). */
  @IsIn(SHARDING_MODES)
  mode: ShardingMode = 'cooperative';

  /** Membership changes are debounced by this; at most 4 × under constant churn. */
  @IsInt()
  @Min(0)
  @Max(600_000)
  settleMs = 500;

  /** Cooperative: a gained partition starts this long after the table changed. */
  @IsInt()
  @Min(0)
  @Max(600_000)
  handoffDelayMs = 250;

  /** The longest a released partition's handler is awaited. */
  @IsInt()
  @Min(1)
  @Max(3_600_000)
  drainTimeoutMs = 30_000;

  /** 1 = floor or ceiling of the quota; above 1, at most ceil(factor × quota). */
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(1)
  @Max(2)
  balanceFactor = 1;

  /** This instance's capacity. */
  @IsInt()
  @Min(1)
  @Max(1000)
  weight = 1;

  @Nested()
  lock = new ShardingLockSettings();
}

export const HTTP_STRATEGIES = ['round-robin', 'random', 'least-request', 'p2c-ewma'] as const;
export type HttpStrategy = (typeof HTTP_STRATEGIES)[number];

export class HttpRetrySettings {
  /** Each on an instance not tried yet. */
  @IsInt()
  @Min(0)
  @Max(10)
  maxRetries = 2;

  /** Answers retried like a failed attempt (idempotent requests only). */
  @IsArray()
  @ArrayMaxSize(100)
  @IsInt({ each: true })
  @Min(100, { each: true })
  @Max(599, { each: true })
  statuses: number[] = [502, 503, 504];

  /** Retries allowed: this percentage of the requests of the last 10 s … */
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0)
  @Max(100)
  budgetPercent = 20;

  /** … plus this many per second. */
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0)
  @Max(10_000)
  minPerSecond = 10;

  /** Request bodies up to this size are buffered so they can be sent again. */
  @IsInt()
  @Min(0)
  @Max(104_857_600)
  maxBufferedBodyBytes = 1_048_576;
}

export class HttpOutlierSettings {
  @IsInt()
  @Min(1)
  @Max(1000)
  consecutiveFailures = 5;

  @IsInt()
  @Min(1)
  @Max(3_600_000)
  baseEjectionMs = 30_000;

  @IsInt()
  @Min(1)
  @Max(3_600_000)
  maxEjectionMs = 300_000;

  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0)
  @Max(100)
  maxEjectionPercent = 50;
}

export class HttpTimeoutSettings {
  @IsInt()
  @Min(1)
  @Max(600_000)
  connectMs = 1_000;

  /** One attempt, until its response headers. */
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(3_600_000)
  attemptMs?: number;

  /** The whole call, every attempt included, until the response headers. */
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(3_600_000)
  deadlineMs?: number;
}

/** TLS of the client's connections to instances (`https://name/…`). */
export class HttpTlsSettings extends TlsMaterialSettings {
  @IsBoolean()
  rejectUnauthorized = true;
}

/** `DiscoveryHttpClient`: calling a service by name. */
export class HttpSettings {
  @IsIn(HTTP_STRATEGIES)
  strategy: HttpStrategy = 'round-robin';

  @Nested()
  retry = new HttpRetrySettings();

  @Nested()
  outlier = new HttpOutlierSettings();

  @Nested()
  timeouts = new HttpTimeoutSettings();

  /** A watch opened for a resolved name is released after this long without a call for it. */
  @IsInt()
  @Min(100)
  @Max(86_400_000)
  idleWatchMs = 60_000;

  /** Absent: Node's default CAs, no client certificate. */
  @OptionalNested(HttpTlsSettings)
  tls?: HttpTlsSettings;
}

/** The validated, defaulted settings every part of the module reads (`DISCOVERY_SETTINGS`). */
export class DiscoverySettings {
  /** `false`: the hooks do nothing; the provider is still injectable. */
  @IsBoolean()
  enabled = true;

  /** Register on bootstrap, deregister on shutdown. */
  @IsBoolean()
  autoRegister = true;

  @Nested()
  consul = new ConsulConnectionSettings();

  @Nested()
  service = new ServiceSettings();

  /** A given check replaces this one as a whole. */
  @ReadWith(readHealthCheck)
  healthCheck: HealthCheckSettings = Object.assign(new TtlHealthCheckSettings(), {
    ttl: '10s',
    deregisterCriticalServiceAfter: '1m',
  });

  @Nested()
  heartbeat = new HeartbeatSettings();

  @Nested()
  retry = new RetrySettings();

  /** The whole teardown never takes longer. */
  @IsInt()
  @Min(1)
  @Max(600_000)
  shutdownTimeoutMs = 3000;

  @Nested()
  watch = new WatchSettings();

  @Nested()
  http = new HttpSettings();

  /** Partitions of the own service over its live membership; absent = off. */
  @OptionalNested(ShardingSettings)
  sharding?: ShardingSettings;
}
