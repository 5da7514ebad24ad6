import type { HealthCheck } from '../protocol/service-discovery.protocol.js';
import type { WatchConsistency } from './discovery.settings.js';

/** What `forRoot` / `forRootAsync` take; every field is optional and merged over the defaults. */
export interface DiscoveryModuleOptions {
  enabled?: boolean;
  autoRegister?: boolean;
  consul?: {
    host?: string;
    port?: number;
    secure?: boolean;
    token?: string;
    datacenter?: string;
    ca?: string;
    cert?: string;
    key?: string;
    timeoutMs?: number;
    maxSockets?: number;
  };
  service?: {
    name?: string;
    id?: string;
    address?: string;
    /** Omit the address so the agent's is used. */
    preferAgentAddress?: boolean;
    port?: number;
    tags?: string[];
    meta?: Record<string, string>;
  };
  /** Replaces the default TTL check as a whole. */
  healthCheck?: HealthCheck;
  heartbeat?: { intervalRatio?: number };
  retry?: {
    maxAttempts?: number;
    initialDelayMs?: number;
    maxDelayMs?: number;
    failFast?: boolean;
  };
  shutdownTimeoutMs?: number;
  watch?: {
    waitTime?: string;
    consistency?: WatchConsistency;
    rateLimit?: { perSecond?: number; burst?: number };
    maxLongPolls?: number;
    services?: string[];
  };
}

export interface DiscoveryOptionsFactory {
  createDiscoveryOptions(): DiscoveryModuleOptions | Promise<DiscoveryModuleOptions>;
}
