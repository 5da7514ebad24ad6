#!/usr/bin/env node
// npm run simulate -- --runs N [--seed S] [--path P] [--faults a,b,c] [--survey]
// Runs the ownership simulation (test/simulation/) for N schedules, or replays one schedule from
// the seed and path a failure printed. --faults: only these fault kinds (stall, losePasses, slow,
// invalidate, agentRestart, kill, term, flap, deregister, register, doubleHandler, spawn).
// --survey: N independent seeds from S on, going on past failures.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const env = { ...process.env };
for (let i = 0; i < args.length; i++) {
  const flag = args[i];
  const value = args[i + 1];
  if (flag === '--runs') env.SIM_RUNS = value;
  else if (flag === '--seed') env.SIM_SEED = value;
  else if (flag === '--path') env.SIM_PATH = value;
  else if (flag === '--faults') env.SIM_FAULTS = value;
  else if (flag === '--survey') {
    env.SIM_SURVEY = '1';
    continue;
  } else {
    console.error(
      `simulate: unknown argument ${flag} (--runs N, --seed S, --path P, --faults a,b, --survey)`,
    );
    process.exit(2);
  }
  i++;
}
// A replayed schedule is one run.
if (env.SIM_PATH !== undefined && env.SIM_RUNS === undefined) env.SIM_RUNS = '1';
env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --experimental-vm-modules --disable-warning=ExperimentalWarning`;
const jest = spawnSync(
  process.execPath,
  [
    'node_modules/jest/bin/jest.js',
    '--runInBand',
    '--testRegex',
    'test/simulation/simulate\\.sim-spec\\.ts$',
  ],
  { stdio: 'inherit', env },
);
process.exit(jest.status ?? 1);
