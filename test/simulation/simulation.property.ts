import fc from 'fast-check';
import { SimClock } from './sim-clock.js';
import { SimWorld, type Behaviour, type Fault, type Mode, type Scenario } from './sim-world.js';

const who = fc.nat({ max: 3 });
const behaviour = fc.constantFrom<Behaviour>('cooperative', 'ignores', 'throws');

const faults: Record<Fault['kind'], fc.Arbitrary<Fault>> = {
  stall: fc.record({ kind: fc.constant('stall'), who, ms: fc.integer({ min: 300, max: 6_000 }) }),
  losePasses: fc.record({
    kind: fc.constant('losePasses'),
    who,
    ms: fc.integer({ min: 500, max: 4_000 }),
  }),
  slow: fc.record({
    kind: fc.constant('slow'),
    who,
    ms: fc.integer({ min: 200, max: 4_000 }),
    delayMs: fc.integer({ min: 50, max: 2_500 }),
  }),
  invalidate: fc.record({ kind: fc.constant('invalidate'), who }),
  agentRestart: fc.record({ kind: fc.constant('agentRestart'), who }),
  kill: fc.record({ kind: fc.constant('kill'), who }),
  term: fc.record({ kind: fc.constant('term'), who }),
  flap: fc.record({
    kind: fc.constant('flap'),
    who,
    times: fc.integer({ min: 1, max: 6 }),
    everyMs: fc.integer({ min: 60, max: 600 }),
  }),
  deregister: fc.record({ kind: fc.constant('deregister'), who }),
  register: fc.record({ kind: fc.constant('register'), who }),
  doubleHandler: fc.record({ kind: fc.constant('doubleHandler'), who }),
  spawn: fc.record({ kind: fc.constant('spawn'), behaviour }),
};

export const FAULT_KINDS = Object.keys(faults) as Fault['kind'][];

/** Scenarios drawing their faults from `kinds` (all by default: a replay must use the same). */
export function scenarioOf(kinds: readonly Fault['kind'][] = FAULT_KINDS): fc.Arbitrary<Scenario> {
  return fc.record({
    mode: fc.constantFrom<Mode>('cooperative', 'exclusive'),
    partitions: fc.integer({ min: 1, max: 8 }),
    behaviours: fc.array(behaviour, { minLength: 2, maxLength: 3 }),
    seed: fc.integer(),
    steps: fc.array(
      fc.record({
        waitMs: fc.integer({ min: 0, max: 3_000 }),
        fault: fc.oneof(...kinds.map((kind) => faults[kind])),
      }),
      { maxLength: 5 },
    ),
  });
}

/**
 * The simulation as a fast-check property: a scenario (instances, faults) and a scheduler (the
 * order of Consul's answers). Every schedule gets a fresh virtual clock and Consul.
 */
export const ownershipProperty = (
  kinds?: readonly Fault['kind'][],
): fc.IAsyncPropertyWithHooks<[Scenario, fc.Scheduler]> => {
  return fc.asyncProperty(scenarioOf(kinds), fc.scheduler(), async (plan, scheduler) => {
    const clock = new SimClock();
    clock.install();
    const world = new SimWorld(plan, clock, scheduler);
    try {
      await world.play();
    } finally {
      world.dispose();
      clock.uninstall();
    }
  });
};

export interface SimulationOptions {
  runs: number;
  seed?: number;
  path?: string;
  /** Stop starting new schedules after this long (the CI batch's bound). */
  timeLimitMs?: number;
  /** Only these faults (a seed found with `--faults` replays with the same list). */
  faults?: readonly Fault['kind'][];
}

export interface SimulationReport {
  failed: boolean;
  runs: number;
  ms: number;
  /** What to print: the count, or the violation with its seed and path. */
  text: string;
}

/** Runs the property; a failure's report names its seed and path (replay: `--seed S --path P`). */
export async function simulate(options: SimulationOptions): Promise<SimulationReport> {
  const started = Date.now();
  const details = await fc.check(ownershipProperty(options.faults), {
    numRuns: options.runs,
    seed: options.seed,
    path: options.path,
    endOnFailure: true,
    interruptAfterTimeLimit: options.timeLimitMs,
    markInterruptAsFailure: false,
  });
  const ms = Date.now() - started;
  const text = details.failed
    ? `simulation: VIOLATION after ${details.numRuns} schedules: ${(details.errorInstance as Error)?.message}\nreplay: npm run simulate -- --seed ${details.seed} --path ${details.counterexamplePath}${options.faults ? ` --faults ${options.faults.join(',')}` : ''}\n${fc.defaultReportMessage(details)}\n`
    : `simulation: ${details.numRuns} schedules, 0 violations, ${ms} ms (seed ${details.seed})\n`;
  return { failed: details.failed, runs: details.numRuns, ms, text };
}

/**
 * Independent schedules from seeds `first`, `first + 1`, …, going on past failures: how many
 * violate, and which rule (one line per failing seed, replayable with `--seed S --path 0`).
 */
export async function survey(
  runs: number,
  first: number,
  faults?: readonly Fault['kind'][],
): Promise<{ failed: number; text: string }> {
  const started = Date.now();
  const lines: string[] = [];
  const rules = new Map<string, number>();
  for (let seed = first; seed < first + runs; seed++) {
    const details = await fc.check(ownershipProperty(faults), {
      numRuns: 1,
      seed,
      endOnFailure: true,
    });
    if ((seed - first + 1) % 1_000 === 0) {
      process.stdout.write(
        `survey: ${seed - first + 1}/${runs}, ${lines.length} violations, ${Date.now() - started} ms\n`,
      );
    }
    if (!details.failed) continue;
    const message = (details.errorInstance as Error | null)?.message ?? 'unknown';
    const [plan] = details.counterexample as [Scenario, fc.Scheduler];
    const steps = plan.steps.map((step) => step.fault.kind).join(',');
    const line = `seed ${seed} path 0 ${plan.mode} ${plan.behaviours.join('/')} [${steps}]: ${message}`;
    lines.push(line);
    // Printed at once too: a long survey shows what it found while it runs.
    process.stdout.write(`${line}\n`);
    const rule = message.replace(/\d+/g, 'N').replace(/orders-[a-z]/g, 'X');
    rules.set(rule, (rules.get(rule) ?? 0) + 1);
  }
  const summary = [...rules].map(([rule, n]) => `  ${n} × ${rule}`).join('\n');
  const text = `survey: ${runs} schedules from seed ${first}, ${lines.length} violations, ${Date.now() - started} ms\n${summary}\n`;
  return { failed: lines.length, text };
}
