import { serviceCheckId } from '../consul/agent-definition.js';
import type { LocalCheck } from '../consul/consul.client.js';
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
   * Checks the agent holds not passing that take it out of Consul's `?passing`, by id with their
   * status: maintenance mode (`_service_maintenance:<id>`, `_node_maintenance`), node checks,
   * any other check of it. Absent when none.
   */
  failingChecks?: Record<string, string>;
  /**
   * `registered`, held by the agent, passing in Consul's view (no failing check) and, for a TTL
   * check, last confirmed passing less than a TTL ago. An HTTP/TCP check's own status is not
   * consulted: Consul runs it, and it may probe the very health endpoint that asks.
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
  /** The agent's local checks; `undefined` when the read failed. */
  checks?: readonly LocalCheck[];
  now: number;
}

export function selfStatus(input: SelfStatusInput): SelfStatus {
  const { serviceId, state, held, lastPassAt, ttlMs, checks = [], now } = input;
  const ttl = ttlMs !== undefined;
  const own = serviceCheckId(serviceId);
  const failing = checks.filter(
    (check) =>
      (check.serviceId === serviceId || check.serviceId === '') &&
      check.status !== 'passing' &&
      (ttl || check.checkId !== own),
  );
  const passing =
    state === 'registered' &&
    held === true &&
    failing.length === 0 &&
    (!ttl || (lastPassAt !== undefined && now - lastPassAt < ttlMs));
  return {
    serviceId,
    state,
    ...(held !== undefined && { held }),
    ...(ttl &&
      lastPassAt !== undefined && {
        lastPassAgoMs: Math.max(0, Math.round(now - lastPassAt)),
      }),
    ...(failing.length > 0 && {
      failingChecks: Object.fromEntries(failing.map((c) => [c.checkId, c.status])),
    }),
    passing,
  };
}
