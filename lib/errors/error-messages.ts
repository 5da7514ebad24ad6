import type { SettingsViolation } from './discovery-settings.error.js';

export const invalidSettingsMessage = (subject: string, violations: SettingsViolation[]): string =>
  `Invalid ${subject}: ${violations.flatMap((v) => v.reasons).join('; ')}`;

export const timeoutMessage = (operation: string, timeoutMs: number): string =>
  `Consul ${operation} timed out after ${timeoutMs} ms`;

export const consulResponseMessage = (operation: string, status: number, text: string): string =>
  `Consul ${operation} failed with HTTP ${status}: ${text || 'no message'}`;

export const unreachableMessage = (operation: string, target: string, detail: string): string =>
  `Consul ${operation} failed: agent at ${target} is unreachable (${detail})`;

export const tlsFailedMessage = (operation: string, target: string, detail: string): string =>
  `Consul ${operation} failed: TLS with the agent at ${target} failed (${detail}); check consul.ca, and consul.cert/consul.key if the agent verifies clients`;

export const abortedMessage = (operation: string): string =>
  `Consul ${operation} was aborted because the client is shutting down`;

export const closedMessage = (operation: string): string =>
  `Consul ${operation} refused: the Consul client is closed`;

export const selfNotConfiguredMessage = (): string =>
  'service.name and service.port are required to register this instance';

export const registrationStoppedMessage = (serviceId: string): string =>
  `Self-registration of "${serviceId}" has stopped: the application is shutting down`;

export const registrationSupersededMessage = (serviceId: string): string =>
  `Self-registration of "${serviceId}" was superseded by a later registerSelf() or deregisterSelf()`;

export const illegalTransitionMessage = (machine: string, from: string, to: string): string =>
  `${machine} cannot go from "${from}" to "${to}"`;

export const reservedShardMetaMessage = (keys: readonly string[]): string =>
  `service.meta must not set ${keys.join(', ')}: shardPartitions, shardBalance and shardWeight are published by sharding`;

export const shardKeyMessage = (): string => 'key must be a string';

export const partitionOutOfRangeMessage = (partitions: number): string =>
  `partition must be an integer from 0 to ${partitions - 1}`;

export const shardingOffMessage = (): string =>
  'sharding.partitions is required to use ShardingService (sharding is not configured)';

export const handlerMessage = (): string =>
  'handler must be a function (partition, { signal, token }) => Promise<void> | void';

export const unknownInstanceMessage = (serviceId: string): string =>
  `serviceId "${serviceId}" is not an instance known to InMemoryDiscovery`;

export const noInstanceMessage = (service: string): string =>
  `No passing instance of "${service}" to call`;

export const httpTimeoutMessage = (what: string, target: string, timeoutMs: number): string =>
  `${what} of ${target} timed out after ${timeoutMs} ms (before response headers)`;

export const clientStoppedMessage = (service: string): string =>
  `DiscoveryHttpClient refused a call to "${service}": the application is shutting down`;

export const shardKeyWithoutTableMessage = (service: string): string =>
  `shardKey needs a sharded target: no passing instance of "${service}" publishes meta.shardPartitions`;

export const axiosMissingMessage = (): string =>
  'DiscoveryHttpClient.axiosAdapter() needs the optional peer "axios": npm install axios';

export const axiosBodyMessage = (kind: string): string =>
  `The axios adapter sends strings, Buffers, ArrayBuffers, typed arrays and Readable streams; got ${kind}`;

export const healthKeyMessage = (): string => 'key must be a non-empty string';

export const healthOptionsMessage = (): string =>
  'options must be an object { requireRegistered?, maxStaleMs? }';

export const unknownHealthOptionMessage = (name: string): string =>
  `${name} is not an option of isHealthy (requireRegistered, maxStaleMs)`;

export const requireRegisteredMessage = (): string => 'requireRegistered must be a boolean';

export const maxStaleMsMessage = (): string =>
  'maxStaleMs must be an integer from 0 to 2147483647 (milliseconds)';

export const leaseTooShortMessage = (): string =>
  "healthCheck.ttl must be longer than 1s with sharding.mode 'exclusive' (the lease is ttl − max(1s, ttl/10))";

export const leaseRatioMessage = (ttl: string, maxRatio: number, leaseMs: number): string =>
  `heartbeat.intervalRatio must be at most ${maxRatio} with sharding.mode 'exclusive' and healthCheck.ttl ${ttl}: the lease (ttl − max(1s, ttl/10) = ${leaseMs} ms) must cover two heartbeats`;

export const connectionBudgetMessage = (
  maxSockets: number,
  maxLongPolls: number,
  cap: number,
): string =>
  `consul.maxSockets + watch.maxLongPolls + 2 (the change feed) must not be greater than ${cap}, the agent's connections per client IP (limits.http_max_conns_per_client): ${maxSockets} + ${maxLongPolls} + 2 = ${maxSockets + maxLongPolls + 2}`;

export const longPollRoomMessage = (maxSockets: number, cap: number): string =>
  `watch.maxLongPolls must be at most ${cap - 2 - maxSockets} with consul.maxSockets ${maxSockets} (the agent's ${cap} connections per client IP)`;

export const tokenHeaderMessage = (): string =>
  'consul.token must be a valid HTTP header value (no line breaks or control characters, latin1 only)';

export const waitTimeCapMessage = (capMs: number): string =>
  `watch.waitTime must not be greater than ${capMs / 60_000}m (Consul caps a blocking query's wait there)`;

export const scheduleNeedsExclusiveMessage = (mode: string | undefined): string =>
  `sharding.mode must be 'exclusive' for @ClusterCron jobs (it is ${mode === undefined ? 'not configured' : `'${mode}'`}): a fire is claimed under the lock of the job's partition`;

export const duplicateJobMessage = (name: string): string =>
  `${name} names two cron jobs: @ClusterCron names are unique among all the jobs of SchedulerRegistry`;
