import { IsBoolean, IsIn, IsOptional, IsString, IsUrl, MaxLength } from 'class-validator';
import { setDurationMs } from './duration.util.js';
import { IsDuration, IsHttpHeaderMap, IsTcpTarget } from './field.rules.js';
import { isPlainObject, readInto, type ViolationCollector } from './input.reader.js';
import type {
  HttpHealthCheck,
  TcpHealthCheck,
  TtlHealthCheck,
} from './service-discovery.protocol.js';

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

export class HttpHealthCheckSettings implements HttpHealthCheck {
  @IsUrl({ require_tld: false, protocols: ['http', 'https'], require_protocol: true })
  @MaxLength(2048)
  http: string;

  @IsDuration()
  interval = '10s';

  @IsDuration()
  timeout = '5s';

  @IsOptional()
  @IsIn(HTTP_METHODS)
  method?: string;

  @IsOptional()
  @IsHttpHeaderMap()
  header?: Record<string, string[]>;

  @IsOptional()
  @IsBoolean()
  tlsSkipVerify?: boolean;

  @IsOptional()
  @IsDuration()
  deregisterCriticalServiceAfter?: string;

  /** `interval` in ms, set once the check is valid; not an input. */
  intervalMs: number;
}

export class TcpHealthCheckSettings implements TcpHealthCheck {
  @IsString()
  @IsTcpTarget()
  tcp: string;

  @IsDuration()
  interval = '10s';

  @IsDuration()
  timeout = '5s';

  @IsOptional()
  @IsDuration()
  deregisterCriticalServiceAfter?: string;

  /** `interval` in ms, set once the check is valid; not an input. */
  intervalMs: number;
}

export class TtlHealthCheckSettings implements TtlHealthCheck {
  @IsDuration()
  ttl: string;

  @IsOptional()
  @IsDuration()
  deregisterCriticalServiceAfter?: string;

  /** `ttl` in ms, set once the check is valid; not an input. */
  ttlMs: number;
}

export type HealthCheckSettings =
  HttpHealthCheckSettings | TcpHealthCheckSettings | TtlHealthCheckSettings;

const HEALTH_CHECK_KINDS = {
  http: HttpHealthCheckSettings,
  tcp: TcpHealthCheckSettings,
  ttl: TtlHealthCheckSettings,
} as const;

/**
 * A health check is exactly one of `http`, `tcp` or `ttl`, with that kind's fields only. It is
 * validated here, as it is read, because its class depends on which of them is given.
 */
export function readHealthCheck(
  raw: unknown,
  path: string,
  out: ViolationCollector,
): HealthCheckSettings | undefined {
  if (!isPlainObject(raw)) {
    out.add(path, `${path} must be an object with one of http, tcp or ttl`);
    return undefined;
  }
  const kinds = (Object.keys(HEALTH_CHECK_KINDS) as (keyof typeof HEALTH_CHECK_KINDS)[]).filter(
    (kind) => Object.hasOwn(raw, kind),
  );
  if (kinds.length !== 1) {
    out.add(path, `${path} must have exactly one of http, tcp or ttl`);
    return undefined;
  }
  const check = readInto(new HEALTH_CHECK_KINDS[kinds[0]](), raw, path, out);
  out.validate(check, path);
  return check;
}

/** Parses the check's period once, after validation, so its users need no fallback. */
export function setCheckDurations(check: HealthCheckSettings): void {
  if ('ttl' in check) setDurationMs(check, 'ttlMs', check.ttl);
  else setDurationMs(check, 'intervalMs', check.interval);
}
