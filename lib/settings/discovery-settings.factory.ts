import { existsSync } from 'node:fs';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import type { DiscoveryModuleOptions } from './discovery-module-options.interface.js';
import {
  consulEnvDefaults,
  defaultServiceAddress,
  defaultServiceId,
} from './discovery-settings.defaults.js';
import {
  ConsulConnectionSettings,
  DiscoverySettings,
  HeartbeatSettings,
  RateLimitSettings,
  RetrySettings,
  ServiceSettings,
  WatchSettings,
} from './discovery.settings.js';
import { TtlHealthCheckSettings, type HealthCheckSettings } from './health-check.settings.js';
import { PEM_PATTERN } from './settings.validators.js';
import {
  copyMeta,
  copyTags,
  isPlainObject,
  readHealthCheck,
  readSection,
  ViolationCollector,
} from './settings-validation.js';

const ROOT_KEYS = [
  'enabled',
  'autoRegister',
  'consul',
  'service',
  'healthCheck',
  'heartbeat',
  'retry',
  'shutdownTimeoutMs',
  'watch',
] as const;
const CONSUL_KEYS = [
  'host',
  'port',
  'secure',
  'token',
  'datacenter',
  'ca',
  'cert',
  'key',
  'timeoutMs',
  'maxSockets',
] as const;
const SERVICE_KEYS = [
  'name',
  'id',
  'address',
  'preferAgentAddress',
  'port',
  'tags',
  'meta',
] as const;
const WATCH_KEYS = ['waitTime', 'consistency', 'rateLimit', 'maxLongPolls', 'services'] as const;

/**
 * Merges options over the defaults (Consul's env conventions included), validates everything and
 * returns the settings, or throws one `DiscoverySettingsError` listing every bad path.
 */
export function createDiscoverySettings(
  options: DiscoveryModuleOptions | undefined,
  env: NodeJS.ProcessEnv = process.env,
): DiscoverySettings {
  const out = new ViolationCollector();
  const raw: unknown = options ?? {};
  const root: Record<string, unknown> = isPlainObject(raw) ? raw : {};
  // The sections copied here as given are each replaced by their own read below.
  const settings = readSection(
    raw,
    '',
    DiscoverySettings,
    ROOT_KEYS,
    { enabled: true, autoRegister: true, shutdownTimeoutMs: 3000 },
    out,
  );
  const envDefaults = consulEnvDefaults(env);
  settings.consul = readSection(
    root.consul,
    'consul',
    ConsulConnectionSettings,
    CONSUL_KEYS,
    { ...envDefaults, timeoutMs: 5000, maxSockets: 32 },
    out,
  );
  settings.service = readSection(
    root.service,
    'service',
    ServiceSettings,
    SERVICE_KEYS,
    { preferAgentAddress: false, tags: [], meta: {} },
    out,
  );
  const healthCheck =
    root.healthCheck === undefined
      ? Object.assign(new TtlHealthCheckSettings(), {
          ttl: '10s',
          deregisterCriticalServiceAfter: '1m',
        })
      : readHealthCheck(root.healthCheck, 'healthCheck', out);
  settings.heartbeat = readSection(
    root.heartbeat,
    'heartbeat',
    HeartbeatSettings,
    ['intervalRatio'],
    { intervalRatio: 1 / 3 },
    out,
  );
  settings.retry = readSection(
    root.retry,
    'retry',
    RetrySettings,
    ['maxAttempts', 'initialDelayMs', 'maxDelayMs', 'failFast'],
    { maxAttempts: 6, initialDelayMs: 200, maxDelayMs: 5000, failFast: false },
    out,
  );
  const rawWatch = root.watch;
  settings.watch = readSection(
    rawWatch,
    'watch',
    WatchSettings,
    WATCH_KEYS,
    { waitTime: '60s', consistency: 'default', maxLongPolls: 64, services: [] },
    out,
  );
  settings.watch.rateLimit = readSection(
    isPlainObject(rawWatch) ? rawWatch.rateLimit : undefined,
    'watch.rateLimit',
    RateLimitSettings,
    ['perSecond', 'burst'],
    { perSecond: 20, burst: 10 },
    out,
  );
  // Undefined when invalid (already reported): the raw value must not be validated again.
  settings.healthCheck = healthCheck as HealthCheckSettings;

  out.validate(settings, '');
  checkCrossFieldRules(settings, out);
  if (!out.empty) throw new DiscoverySettingsError(out.violations);

  const service = settings.service;
  service.tags = copyTags(service.tags);
  service.meta = copyMeta(service.meta);
  if (service.name !== undefined && service.port !== undefined) {
    service.id ??= defaultServiceId(service.name, service.port);
  }
  if (!service.preferAgentAddress) service.address ??= defaultServiceAddress();
  else service.address = undefined;
  settings.watch.services = [...new Set(settings.watch.services)];
  return settings;
}

function checkCrossFieldRules(settings: DiscoverySettings, out: ViolationCollector): void {
  const { service, retry, consul } = settings;
  if (settings.enabled && settings.autoRegister) {
    if (service.name === undefined) {
      out.add('service.name', 'service.name is required when autoRegister is true');
    }
    if (service.port === undefined) {
      out.add('service.port', 'service.port is required when autoRegister is true');
    }
  }
  if (
    Number.isInteger(retry.initialDelayMs) &&
    Number.isInteger(retry.maxDelayMs) &&
    retry.maxDelayMs < retry.initialDelayMs
  ) {
    out.add('retry.maxDelayMs', 'retry.maxDelayMs must not be smaller than retry.initialDelayMs');
  }
  for (const field of ['ca', 'cert', 'key'] as const) {
    const value = consul[field];
    if (typeof value === 'string' && !PEM_PATTERN.test(value) && !existsSync(value)) {
      out.add(`consul.${field}`, `consul.${field} must be PEM text or the path of a readable file`);
    }
  }
  if ((consul.cert === undefined) !== (consul.key === undefined)) {
    out.add('consul.cert', 'consul.cert and consul.key must be given together');
  }
}
