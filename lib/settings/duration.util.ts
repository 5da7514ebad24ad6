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
