import type { RegistrationState } from './registration-state.js';

/** This instance's registration as seen right now (`DiscoveryStatus.self`). */
export interface SelfStatus {
  serviceId: string;
  state: RegistrationState;
  /** The agent holds the registration; `undefined` when the agent did not answer. */
  held?: boolean;
  /**
   * TTL check: milliseconds since Consul last confirmed it passing (a pass, or a registration
   * starting it passing). Absent before the first, and for HTTP/TCP checks.
   */
  lastPassAgoMs?: number;
  /**
   * `registered`, held by the agent and, for a TTL check, last confirmed passing less than a TTL
   * ago. An HTTP/TCP check's own status is not consulted: Consul runs it, and it may probe the
   * very health endpoint that asks.
   */
  passing: boolean;
}

/** What a health endpoint needs to know (`DiscoveryService.status()`). */
export interface DiscoveryStatus {
  agent: {
    /** The local agent answered one request within `consul.timeoutMs`. */
    reachable: boolean;
    /** Why it did not (names the operation and the agent, never the token). */
    error?: string;
  };
  /** Absent when no `service` is configured (nothing to register). */
  self?: SelfStatus;
}

export interface SelfStatusInput {
  serviceId: string;
  state: RegistrationState;
  /** The ids the agent holds; `undefined` when it did not answer. */
  agentServiceIds?: readonly string[];
  /** `SelfRegistration.lastPassAt` (a `performance.now()` value). */
  lastPassAt?: number;
  /** The TTL of a TTL check; `undefined` for HTTP/TCP checks. */
  ttlMs?: number;
  now: number;
}

export function selfStatus(input: SelfStatusInput): SelfStatus {
  const { serviceId, state, agentServiceIds, lastPassAt, ttlMs, now } = input;
  const status: SelfStatus = { serviceId, state, passing: false };
  if (agentServiceIds) status.held = agentServiceIds.includes(serviceId);
  const ttl = ttlMs !== undefined;
  if (ttl && lastPassAt !== undefined)
    status.lastPassAgoMs = Math.max(0, Math.round(now - lastPassAt));
  status.passing =
    state === 'registered' &&
    status.held === true &&
    (!ttl || (lastPassAt !== undefined && now - lastPassAt < ttlMs));
  return status;
}
