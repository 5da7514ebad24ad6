import { expect, it } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { simulate } from './simulation.property.js';

/**
 * One half of the CI batch (ci-batch-1.spec.ts and ci-batch-2.spec.ts: two files so that Jest runs
 * them side by side): 1,000 schedules from a fixed seed, so that CI replays the same ones
 * (exploring new ones is `npm run simulate`'s job; `SIM_BATCH_SEED` picks others). A violation
 * prints its seed and path; `npm run simulate -- --seed S --path P` replays it.
 */
export function ciBatchHalf(half: 1 | 2): void {
  const seed = Number(process.env.SIM_BATCH_SEED ?? 0) * 2 + half;
  it('1,000 simulated schedules hold every invariant', async () => {
    Logger.overrideLogger(false);
    const report = await simulate({ runs: 1_000, seed });
    process.stdout.write(report.text);
    expect(report.failed).toBe(false);
  }, 300_000);
}
