/** An HTTP check the agent runs against `http` every `interval`. */
export interface HttpHealthCheck {
  http: string;
  /** Defaults to `'10s'`. */
  interval?: string;
  /** Defaults to `'5s'`. */
  timeout?: string;
  method?: string;
  header?: Record<string, string[]>;
  tlsSkipVerify?: boolean;
  deregisterCriticalServiceAfter?: string;
}

/** A TCP connect check the agent runs against `tcp` (`host:port`) every `interval`. */
export interface TcpHealthCheck {
  tcp: string;
  /** Defaults to `'10s'`. */
  interval?: string;
  /** Defaults to `'5s'`. */
  timeout?: string;
  deregisterCriticalServiceAfter?: string;
}

/** A TTL check: the instance must report passing at least every `ttl`. */
export interface TtlHealthCheck {
  ttl: string;
  deregisterCriticalServiceAfter?: string;
}

export type HealthCheck = HttpHealthCheck | TcpHealthCheck | TtlHealthCheck;

export interface ServiceRegistration {
  name: string;
  serviceId: string;
  port: number;
  /** Omitted → the agent's address is used. */
  address?: string;
  tags?: string[];
  meta?: Record<string, string>;
  healthCheck?: HealthCheck;
}

export interface ServiceInstance {
  serviceId: string;
  name: string;
  /** The service's own address, or its node's when it registered none. */
  address: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  node: string;
  datacenter?: string;
}

export interface DiscoveryQuery {
  tag?: string;
  datacenter?: string;
}

/**
 * What consumers inject through `DISCOVERY_PROVIDER`.
 *
 * Invalid arguments throw before any I/O. `register`/`deregister` never reject otherwise: they
 * resolve `false` when Consul is unreachable or refuses. `discover` returns passing instances only.
 */
export interface ServiceDiscoveryProtocol {
  /** `true` = Consul accepted the registration. */
  register(registration: ServiceRegistration): Promise<boolean>;
  /** `true` = the service is gone (already gone counts). */
  deregister(serviceId: string): Promise<boolean>;
  /** Instances whose checks are all passing, sorted by `serviceId`; unknown name → `[]`. */
  discover(name: string, query?: DiscoveryQuery): Promise<ServiceInstance[]>;
}
