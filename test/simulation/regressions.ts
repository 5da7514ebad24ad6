import type { Fault } from './sim-world.js';

/**
 * Schedules that broke an ownership rule (README "Sharding") on the code before issue 15's fixes (commit f8b404b),
 * each replayed exactly by its seed and path (`npm run simulate -- --seed S --path P [--faults
 * …]`). The table in test/simulation/README.md says what each showed.
 */
export interface Regression {
  defect: string;
  seed: number;
  path: string;
  faults?: Fault['kind'][];
  /** The violation the old code printed. */
  violated: string;
}

const SHUTDOWN_FAULTS: Fault['kind'][] = ['slow', 'register', 'agentRestart', 'term', 'deregister'];

export const REGRESSIONS: Regression[] = [
  {
    defect: '1 stranded lock',
    seed: 308,
    path: '0',
    faults: ['slow', 'losePasses', 'stall', 'spawn'],
    violated:
      'converged: partition 0 is run by nobody; its owner is orders-a (its session holds the lock: stranded)',
  },
  {
    defect: '1 stranded lock',
    seed: 1288,
    path: '0',
    violated:
      'converged: partition 0 is run by nobody; its owner is orders-a (its session holds the lock: stranded)',
  },
  {
    defect: '2 same token, overlapping runs',
    seed: 1130,
    path: '0',
    violated:
      "run tokens of partition 0 must strictly increase: orders-a started a run with token 1 after orders-a's run with token 1",
  },
  {
    defect: '2 same token, overlapping runs',
    seed: 1630,
    path: '0',
    violated:
      "run tokens of partition 1 must strictly increase: orders-b started a run with token 1 after orders-b's run with token 1",
  },
  {
    defect: '3 shutdown keeps no time to deregister',
    seed: 1018,
    path: '0',
    violated: 'orders-b: Consul holds the instance after close() resolved',
  },
  {
    defect: '3 shutdown keeps no time to deregister',
    seed: 76,
    path: '0',
    faults: SHUTDOWN_FAULTS,
    violated: 'orders-a: Consul holds the instance after close() resolved',
  },
  {
    defect: '4 handoff starvation',
    seed: 1009,
    path: '0',
    violated:
      'orders-b: partition 0 has been its own in its table for 311 ms but does not run (handoffDelayMs 250)',
  },
  {
    defect: '6 a run nobody aborts',
    seed: 1033,
    path: '0',
    violated: 'orders-a: close() resolved with runs nobody aborted (partitions 0)',
  },
  {
    defect: '6 a run nobody aborts',
    seed: 1057,
    path: '0',
    violated: 'orders-b: close() resolved with runs nobody aborted (partitions 3, 1)',
  },
  {
    defect: '7 zombie registration at shutdown',
    seed: 199,
    path: '0',
    faults: SHUTDOWN_FAULTS,
    violated: 'orders-b: Consul holds the instance after close() resolved',
  },
  {
    defect: 'deregisterSelf() drains and releases first',
    seed: 1719,
    path: '0',
    violated: 'orders-b: owns(1) after deregisterSelf() was called',
  },
];

/**
 * Found on the fixes while they were being written (issue-15x before 94e0292 and 6d7738a) and
 * fixed since: replayed like the ones above.
 */
export const FOUND_ON_FIXES: Regression[] = [
  {
    defect: 'exclusive shutdown with a slow agent keeps no time to deregister',
    seed: 105640,
    path: '0',
    violated: 'orders-a: Consul holds the instance after close() resolved',
  },
  {
    defect: 'exclusive shutdown with a slow agent keeps no time to deregister',
    seed: 101700,
    path: '0',
    violated: 'orders-a: Consul holds the instance after close() resolved',
  },
  {
    defect: 'exclusive shutdown with a slow agent keeps no time to deregister',
    seed: 63,
    path: '0',
    faults: SHUTDOWN_FAULTS,
    violated: 'orders-b: Consul holds the instance after close() resolved',
  },
  {
    defect: 'exclusive: owns() after a deregisterSelf() that follows a registerSelf()',
    seed: 103594,
    path: '0',
    violated: 'orders-a: owns(2) after deregisterSelf() was called',
  },
];

/**
 * Found on the merged fixes (main at 940c6ea, with issue-15x and issue-15r), fixed on issue-15fix:
 * the table's owner held no lock and ran nothing once faults stopped (README: "Found on the
 * merged fixes").
 */
export const FOUND_ON_MAIN: Regression[] = [
  {
    defect: 'exclusive: registerSelf() while registered, after lost passes lapsed the lease',
    seed: 1480,
    path: '0',
    violated: 'converged: partition 0 is run by nobody; its owner is orders-a',
  },
  {
    defect: 'exclusive: lost passes and an invalidated session, ownership never resumes',
    seed: 110990,
    path: '0',
    violated: 'converged: partition 1 is run by nobody; its owner is orders-b',
  },
  {
    defect: 'exclusive: lost passes and an invalidated session, ownership never resumes',
    seed: 126407,
    path: '0',
    violated: 'converged: partition 3 is run by nobody; its owner is orders-b',
  },
  {
    defect: 'exclusive: partition run by nobody (long run)',
    seed: 108440,
    path: '0',
    violated: 'converged: partition 0 is run by nobody; its owner is orders-b',
  },
  {
    defect: 'exclusive: partition run by nobody (long run)',
    seed: 109378,
    path: '0',
    violated: 'converged: partition 1 is run by nobody; its owner is orders-b',
  },
  {
    defect: 'exclusive: partition run by nobody (long run)',
    seed: 130615,
    path: '0',
    violated: 'converged: partition 0 is run by nobody; its owner is orders-a',
  },
  // Found by the final long run on b0f04d0, a first version of "a stopped handler's run is still
  // awaited" that also forgot settled runs: a handler that returned at once (its work tied to its
  // signal) was never aborted.
  {
    defect: 'a settled run forgotten: its signal never aborted at close()',
    seed: 4024544,
    path: '0',
    violated:
      'orders-b: close() resolved with runs nobody aborted (partitions 1, 3, 4, 1, 1, 3) [at 10631 ms]',
  },
  {
    defect: 'a settled run forgotten: its signal never aborted at close()',
    seed: 4074661,
    path: '0',
    violated: 'orders-b: close() resolved with runs nobody aborted (partitions 5) [at 11395 ms]',
  },
  {
    defect: 'a settled run forgotten: never aborted, it still counts as running there',
    seed: 4030311,
    path: '0',
    violated:
      'converged: partition 4 is run by orders-b, not by its owner orders-c alone [at 20229 ms]',
  },
];
