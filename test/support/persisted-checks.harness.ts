import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { waitFor } from './wait-for.harness.js';

/**
 * A check's definition as the agent persisted it. 1.8.7's API answers `Definition: {}` for every
 * check; with `-data-dir` the (dev) agent writes each check's definition to
 * `<data-dir>/checks/*` instead, durations in nanoseconds.
 */
export interface PersistedCheckType {
  HTTP: string;
  Header: Record<string, string[]> | null;
  Method: string;
  TCP: string;
  TTL: number;
  Interval: number;
  Timeout: number;
  TLSSkipVerify: boolean;
  DeregisterCriticalServiceAfter: number;
}

/** Every check definition under `<dataDir>/checks`, by check ID. */
async function persistedChecks(dataDir: string): Promise<Map<string, PersistedCheckType>> {
  const dir = path.join(dataDir, 'checks');
  const files = await readdir(dir).catch(() => [] as string[]);
  const out = new Map<string, PersistedCheckType>();
  for (const file of files) {
    const text = await readFile(path.join(dir, file), 'utf8').catch(() => '');
    if (!text) continue;
    const parsed = JSON.parse(text) as { Check: { CheckID: string }; ChkType: PersistedCheckType };
    out.set(parsed.Check.CheckID, parsed.ChkType);
  }
  return out;
}

/** The definition of `checkId` once the agent started with `-data-dir dataDir` has written it. */
export function persistedCheck(dataDir: string, checkId: string): Promise<PersistedCheckType> {
  return waitFor(async () => (await persistedChecks(dataDir)).get(checkId), {
    timeoutMs: 3000,
    message: `agent persisted no definition of ${checkId}`,
  });
}
