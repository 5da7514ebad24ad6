const DURATION = /^(\d+)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/** Consul-style duration (`'10s'`, `'500ms'`) → milliseconds; `undefined` when malformed. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const match = DURATION.exec(value);
  if (!match) return undefined;
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  return Number.isSafeInteger(ms) ? ms : undefined;
}

export function isPositiveDuration(value: unknown): value is string {
  const ms = parseDuration(value);
  return ms !== undefined && ms > 0;
}

/**
 * Sets `target[key]` to the ms of a duration `IsDuration` has accepted, not enumerable, so that
 * spreads, JSON and equality see only the fields that were given.
 */
export function setDurationMs<T extends object>(
  target: T,
  key: keyof T & string,
  duration: string,
): void {
  const value = parseDuration(duration)!;
  Object.defineProperty(target, key, { value, writable: true, configurable: true });
}
