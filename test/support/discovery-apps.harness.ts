import type { LoggerService } from '@nestjs/common';
import { DiscoveryModule, type DiscoveryModuleOptions } from '../../lib/index.js';
import { AppHarness } from './apps.harness.js';

/** In-process apps on the library's sources (lib/), closed by `closeAll()` in afterEach. */
export class TestApps extends AppHarness<DiscoveryModuleOptions> {
  constructor(defaultLogger?: () => LoggerService) {
    super(DiscoveryModule, defaultLogger);
  }
}

/** Small, fast retry settings. */
export const FAST_RETRY = { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 200 } as const;

export interface RetryBudget {
  maxAttempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
}

/** Upper bound of the backoff between `attempts` tries (full jitter never waits longer). */
export function backoffBudgetMs(retry: RetryBudget, attempts = retry.maxAttempts): number {
  let total = 0;
  for (let n = 0; n < attempts - 1; n++) {
    total += Math.min(retry.maxDelayMs, retry.initialDelayMs * 2 ** n);
  }
  return total;
}

/**
 * Upper bound of a retried write: every attempt may take its timeout, and once more for the
 * client's immediate retry of a reset socket, plus the backoff in between.
 */
export function writeBudgetMs(retry: RetryBudget, timeoutMs: number): number {
  return retry.maxAttempts * 2 * timeoutMs + backoffBudgetMs(retry);
}
