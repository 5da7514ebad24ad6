import { expect, it } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { Fault } from './sim-world.js';
import { simulate, survey } from './simulation.property.js';

/**
 * `npm run simulate -- --runs N [--seed S] [--path P] [--faults a,b] [--survey]` (scripts/simulate.mjs): more
 * schedules than the CI batch, or one replayed. Not matched by `npm test` (`*.sim-spec.ts`).
 */
const RUNS = Number(process.env.SIM_RUNS ?? 10_000);
const SEED = process.env.SIM_SEED === undefined ? undefined : Number(process.env.SIM_SEED);
const PATH = process.env.SIM_PATH || undefined;
const FAULTS = process.env.SIM_FAULTS
  ? (process.env.SIM_FAULTS.split(',') as Fault['kind'][])
  : undefined;

it(
  `simulates ${RUNS} schedules`,
  async () => {
    Logger.overrideLogger(false);
    if (process.env.SIM_SURVEY) {
      const report = await survey(RUNS, SEED ?? Date.now() % 2 ** 31, FAULTS);
      process.stdout.write(report.text);
      expect(report.failed).toBe(0);
      return;
    }
    const report = await simulate({ runs: RUNS, seed: SEED, path: PATH, faults: FAULTS });
    process.stdout.write(report.text);
    expect(report.failed).toBe(false);
  },
  24 * 3_600_000,
);
