import { existsSync } from 'node:fs';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { parseDuration, setDurationMs } from '../protocol/duration.util.js';
import { setCheckDurations } from '../protocol/health-check.rules.js';
import {
  copyMeta,
  copyTags,
  isPlainObject,
  readInto,
  ViolationCollector,
} from '../protocol/input.reader.js';
import { MAX_META_PAIRS } from '../protocol/field.rules.js';
import {
  connectionBudgetMessage,
  leaseRatioMessage,
  leaseTooShortMessage,
  longPollRoomMessage,
  reservedShardMetaMessage,
  tokenHeaderMessage,
  waitTimeCapMessage,
} from '../errors/error-messages.js';
import { heartbeatMs, leaseMs, maxLeaseRatio } from '../protocol/lease.rules.js';
import type { DiscoveryModuleOptions } from './discovery-module-options.interface.js';
import {
  consulEnvDefaults,
  defaultServiceAddress,
  defaultServiceId,
} from './discovery-settings.defaults.js';
import {
  DiscoverySettings,
  PEM_PATTERN,
  SHARD_META_KEYS,
  type TlsMaterialSettings,
} from './discovery.settings.js';

/** The agent's `limits.http_max_conns_per_client` default. */
export const AGENT_CONNECTIONS_PER_CLIENT = 200;
/** Consul caps a blocking query's `wait` at 10 minutes. */
export const MAX_WAIT_MS = 600_000;
/** What Node accepts in a header value (its `checkInvalidHeaderChar`): tab, visible latin1. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Merges options over the defaults (Consul's env conventions included), validates everything and
 * returns the settings, or throws one `DiscoverySettingsError` listing every bad path.
 */
export function createDiscoverySettings(
  options: DiscoveryModuleOptions | undefined,
  env: NodeJS.ProcessEnv = process.env,
): DiscoverySettings {
  const out = new ViolationCollector();
  const defaults = new DiscoverySettings();
  Object.assign(defaults.consul, consulEnvDefaults(env));
  const settings = readInto(defaults, options ?? {}, '', out);
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
  setDurationMs(settings.watch, 'waitMs', settings.watch.waitTime);
  setCheckDurations(settings.healthCheck);
  if (settings.sharding) {
    const lock = settings.sharding.lock;
    setDurationMs(lock, 'lockDelayMs', lock.lockDelay);
  }
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
  checkTlsMaterial('consul', consul, out);
  if (settings.http.tls) checkTlsMaterial('http.tls', settings.http.tls, out);
  checkEdges(settings, out);
  checkShardingRules(settings, out);
  const { outlier } = settings.http;
  if (
    Number.isInteger(outlier.baseEjectionMs) &&
    Number.isInteger(outlier.maxEjectionMs) &&
    outlier.maxEjectionMs < outlier.baseEjectionMs
  ) {
    out.add(
      'http.outlier.maxEjectionMs',
      'http.outlier.maxEjectionMs must not be smaller than http.outlier.baseEjectionMs',
    );
  }
}

/** Values each valid alone that Consul or Node would still refuse or mishandle. */
function checkEdges(settings: DiscoverySettings, out: ViolationCollector): void {
  const { consul, watch } = settings;
  // Never echo the token: a message says what is wrong, not what was given.
  if (typeof consul.token === 'string' && !HEADER_VALUE.test(consul.token)) {
    out.add('consul.token', tokenHeaderMessage());
  }
  const waitMs = parseDuration(watch.waitTime);
  if (waitMs !== undefined && waitMs > MAX_WAIT_MS) {
    out.add('watch.waitTime', waitTimeCapMessage(MAX_WAIT_MS));
  }
  const { maxSockets } = consul;
  const { maxLongPolls } = watch;
  if (
    Number.isInteger(maxSockets) &&
    Number.isInteger(maxLongPolls) &&
    maxSockets + maxLongPolls + 2 > AGENT_CONNECTIONS_PER_CLIENT
  ) {
    out.add(
      'consul.maxSockets',
      connectionBudgetMessage(maxSockets, maxLongPolls, AGENT_CONNECTIONS_PER_CLIENT),
    );
    out.add('watch.maxLongPolls', longPollRoomMessage(maxSockets, AGENT_CONNECTIONS_PER_CLIENT));
  }
}

/** ca / cert / key: PEM text or a readable file; cert and key together. */
function checkTlsMaterial(prefix: string, tls: TlsMaterialSettings, out: ViolationCollector): void {
  for (const field of ['ca', 'cert', 'key'] as const) {
    const value = tls[field];
    if (typeof value === 'string' && !PEM_PATTERN.test(value) && !existsSync(value)) {
      out.add(
        `${prefix}.${field}`,
        `${prefix}.${field} must be PEM text or the path of a readable file`,
      );
    }
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    out.add(`${prefix}.cert`, `${prefix}.cert and ${prefix}.key must be given together`);
  }
}

function checkShardingRules(settings: DiscoverySettings, out: ViolationCollector): void {
  const { service, sharding, healthCheck } = settings;
  const meta = isPlainObject(service.meta) ? Object.keys(service.meta) : [];
  const reserved = meta.filter((key) => (SHARD_META_KEYS as readonly string[]).includes(key));
  if (reserved.length > 0) {
    out.add('service.meta', reservedShardMetaMessage(reserved));
  }
  if (!sharding) return;
  if (service.name === undefined) {
    out.add('service.name', 'service.name is required when sharding is configured');
  }
  if (service.port === undefined) {
    out.add('service.port', 'service.port is required when sharding is configured');
  }
  if (meta.length + SHARD_META_KEYS.length > MAX_META_PAIRS) {
    out.add(
      'service.meta',
      `service.meta must hold at most ${MAX_META_PAIRS - SHARD_META_KEYS.length} pairs when sharding is configured (${SHARD_META_KEYS.join(', ')} are added)`,
    );
  }
  if (sharding.mode === 'exclusive' && healthCheck && !('ttl' in healthCheck)) {
    out.add(
      'sharding.mode',
      "sharding.mode 'exclusive' requires the TTL health check (its lease is what self-fencing measures)",
    );
  }
  if (sharding.mode === 'exclusive') checkLease(settings, out);
}

/** A lease that lapses between two ordinary beats would drop every partition on every beat. */
function checkLease(settings: DiscoverySettings, out: ViolationCollector): void {
  const { healthCheck, heartbeat } = settings;
  if (typeof healthCheck !== 'object' || healthCheck === null || !('ttl' in healthCheck)) return;
  const ttlMs = parseDuration(healthCheck.ttl);
  const ratio = heartbeat.intervalRatio;
  if (ttlMs === undefined || typeof ratio !== 'number' || !Number.isFinite(ratio)) return;
  const lease = leaseMs(ttlMs);
  if (lease <= 0) {
    out.add('healthCheck.ttl', leaseTooShortMessage());
  } else if (2 * heartbeatMs(ttlMs, ratio) > lease) {
    out.add(
      'heartbeat.intervalRatio',
      leaseRatioMessage(healthCheck.ttl, maxLeaseRatio(ttlMs), lease),
    );
  }
}
