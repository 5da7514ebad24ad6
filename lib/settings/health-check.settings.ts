import { IsBoolean, IsIn, IsOptional, IsString, IsUrl, MaxLength } from 'class-validator';
import { IsDuration, IsHttpHeaderMap, IsTcpTarget } from './settings.validators.js';

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

export class HttpHealthCheckSettings {
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
}

export class TcpHealthCheckSettings {
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
}

export class TtlHealthCheckSettings {
  @IsDuration()
  ttl: string;

  @IsOptional()
  @IsDuration()
  deregisterCriticalServiceAfter?: string;
}

export type HealthCheckSettings =
  HttpHealthCheckSettings | TcpHealthCheckSettings | TtlHealthCheckSettings;

export const HEALTH_CHECK_KINDS = {
  http: HttpHealthCheckSettings,
  tcp: TcpHealthCheckSettings,
  ttl: TtlHealthCheckSettings,
} as const;

export const HEALTH_CHECK_KEYS = {
  http: [
    'http',
    'interval',
    'timeout',
    'method',
    'header',
    'tlsSkipVerify',
    'deregisterCriticalServiceAfter',
  ],
  tcp: ['tcp', 'interval', 'timeout', 'deregisterCriticalServiceAfter'],
  ttl: ['ttl', 'deregisterCriticalServiceAfter'],
} as const;
