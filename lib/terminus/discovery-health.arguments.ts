import {
  DiscoverySettingsError,
  type SettingsViolation,
} from '../errors/discovery-settings.error.js';
import {
  healthKeyMessage,
  healthOptionsMessage,
  maxStaleMsMessage,
  requireRegisteredMessage,
  unknownHealthOptionMessage,
} from '../errors/error-messages.js';

export interface DiscoveryHealthOptions {
  /** When a service is configured: down unless it is registered and passing. Default `true`. */
  requireRegistered?: boolean;
  /**
   * Down when a name of `watch.services` has no set yet, or its watch is stale (the last
   * refresh failed) and its set was last confirmed more than this many ms ago. Unset: the
   * watches are reported, never judged.
   */
  maxStaleMs?: number;
}

export interface CheckedHealthArguments {
  key: string;
  requireRegistered: boolean;
  maxStaleMs?: number;
}

const OPTIONS = new Set(['requireRegistered', 'maxStaleMs']);
const MAX_MS = 2_147_483_647;

/** Every bad argument of `isHealthy`, named, before any request. */
export function checkHealthArguments(key: unknown, options: unknown): CheckedHealthArguments {
  const violations: SettingsViolation[] = [];
  const bad = (path: string, reason: string): void => {
    violations.push({ path, reasons: [reason] });
  };
  if (typeof key !== 'string' || key.length === 0) bad('key', healthKeyMessage());
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    bad('options', healthOptionsMessage());
  } else {
    const { requireRegistered, maxStaleMs } = options as Record<string, unknown>;
    for (const name of Object.keys(options)) {
      if (!OPTIONS.has(name)) bad(name, unknownHealthOptionMessage(name));
    }
    if (requireRegistered !== undefined && typeof requireRegistered !== 'boolean') {
      bad('requireRegistered', requireRegisteredMessage());
    }
    if (
      maxStaleMs !== undefined &&
      !(
        Number.isInteger(maxStaleMs) &&
        (maxStaleMs as number) >= 0 &&
        (maxStaleMs as number) <= MAX_MS
      )
    ) {
      bad('maxStaleMs', maxStaleMsMessage());
    }
  }
  if (violations.length > 0) {
    throw new DiscoverySettingsError(violations, 'DiscoveryHealthIndicator.isHealthy arguments');
  }
  const { requireRegistered = true, maxStaleMs } = options as DiscoveryHealthOptions;
  return maxStaleMs === undefined
    ? { key: key as string, requireRegistered }
    : { key: key as string, requireRegistered, maxStaleMs };
}
