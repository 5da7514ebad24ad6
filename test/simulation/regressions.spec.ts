import { describe, expect, it } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { FOUND_ON_FIXES, FOUND_ON_MAIN, REGRESSIONS, type Regression } from './regressions.js';
import { simulate } from './simulation.property.js';

const replay = async ({ seed, path, faults }: Regression): Promise<void> => {
  Logger.overrideLogger(false);
  const report = await simulate({ runs: 1, seed, path, faults });
  expect(report.text).toContain('0 violations');
};

/** Each schedule that broke a rule before issue 15's fixes, replayed exactly: it holds now. */
describe('simulation: regression seeds', () => {
  it.each(REGRESSIONS)('defect $defect: seed $seed path $path', replay);
  it.each(FOUND_ON_FIXES)('found on the fixes, $defect: seed $seed path $path', replay);
  it.each(FOUND_ON_MAIN)('found on main, $defect: seed $seed path $path', replay);
});
