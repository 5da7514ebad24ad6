/** The heartbeat never beats more often than this, whatever the ratio. */
const NEVER_BELOW_MS = 50;

/** The heartbeat's period: `intervalRatio` of the check's period (the TTL), at least 50 ms. */
export const heartbeatMs = (periodMs: number, intervalRatio: number): number =>
  Math.max(NEVER_BELOW_MS, Math.floor(periodMs * intervalRatio));

/**
 * Exclusive sharding's lease: a confirmed TTL pass counts this long from when it was sent,
 * `ttl − max(1 s, ttl/10)`, so the instance stops owning before Consul could fail its check.
 */
export const leaseMs = (ttlMs: number): number => ttlMs - Math.max(1_000, ttlMs / 10);

/**
 * The largest `intervalRatio` whose beats fit twice in the lease of `ttlMs` (≤ 0: none does,
 * the TTL is too short); rounded down to 3 decimals, for a message.
 */
export const maxLeaseRatio = (ttlMs: number): number =>
  Math.floor((leaseMs(ttlMs) / (2 * ttlMs)) * 1000) / 1000;
