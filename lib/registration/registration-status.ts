import type { RegistrationState } from './registration-state.js';

/** This instance's registration as seen right now (`DiscoveryStatus.self`). */
export interface SelfStatus {
  serviceId: string;
  state: RegistrationState;
  /** The agent holds the registration; `undefined` when the agent read failed. */
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
    /**
     * One local read of the agent succeeded within `consul.timeoutMs`. A refusal (an ACL 403)
     * counts as a failure: nothing else would work either.
     */
    ok: boolean;
    /** Why not: the operation, the agent and the cause (never the token). */
    error?: string;
  };
  /** Absent when no `service` is configured (nothing to register). */
  self?: SelfStatus;
}

export interface SelfStatusInput {
  serviceId: string;
  state: RegistrationState;
  /** The agent holds it; `undefined` when the read failed. */
  held?: boolean;
  /** `SelfRegistration.lastPassAt` (a `performance.now()` value). */
  lastPassAt?: number;
  /** The TTL of a TTL check; `undefined` for HTTP/TCP checks. */
  ttlMs?: number;
  now: number;
}

export function selfStatus(input: SelfStatusInput): SelfStatus {
  const { serviceId, state, held, lastPassAt, ttlMs, now } = input;
  const ttl = ttlMs !== undefined;
  const passing =
    state === 'registered' &&
    held === true &&
    (!ttl || (lastPassAt !== undefined && now - lastPassAt < ttlMs));
  return {
    serviceId,
    state,
    ...(held !== undefined && { held }),
    ...(ttl &&
      lastPassAt !== undefined && {
        lastPassAgoMs: Math.max(0, Math.round(now - lastPassAt)),
      }),
    passing,
  };
}
