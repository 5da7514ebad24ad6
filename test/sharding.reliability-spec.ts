import {
  fencedWrites,
  killChildApps,
  max,
  median,
  overlappingRuns,
  ownershipRuns,
  reportReliability,
  settledOn,
  shardTable,
  staleAcceptedWrites,
  startConsulAgent,
  startConsulCluster,
  startShardChild,
  stopAllAgents,
  stopAllClusters,
  waitFor,
  lastAssignment,
  type ConsulAgent,
  type OwnershipRun,
  type ShardChild,
} from './support/index.js';

// Exclusive sharding (README "Sharding") under real faults, with real processes: child apps
// (test/support/fixtures/child-app.mjs) in fenced-writer mode write to a CAS'd KV store while
// owns(p) and log their own ownership runs. Asserted from their events and from Consul:
// - after each fault every partition is owned by exactly one live instance again, on the
//   table of the live members, within the bound (planned: drain + settleMs + ~100 ms + margin;
//   crash: TTL + lockDelay + 1 s + margin);
// - the store never accepted a token lower than one it had accepted before (per store epoch: a
//   restarted dev agent wipes it and the tokens restart at 1);
// - no two instances' ownership runs of a partition overlap (their own clocks, one machine);
// - an instance paused past its TTL sees owns(p) === false before any write after SIGCONT.
// And on a 3-server cluster with instances on two client agents: the leader's loss moves nothing.

const PARTITIONS = 16;
const TTL_MS = 3_000;
const LOCK_DELAY_MS = 1_000;
const SETTLE_MS = 200;
const HANDOFF_MS = 100;
const DRAIN_MS = 1_000;
const MARGIN_MS = 2_000; // two loaded cores: 5–6 Nest processes writing, and the agent
const PLANNED_BOUND_MS = DRAIN_MS + SETTLE_MS + 100 + MARGIN_MS;
const CRASH_BOUND_MS = TTL_MS + LOCK_DELAY_MS + 1_000 + MARGIN_MS;
/**
 * After `agent.restart()` SIGKILLs the agent, an answer the old agent gave still reaches a child
 * within a few ms; the new one needs 100 ms or more to start. Time in between splits them.
 */
const OLD_AGENT_GONE_MS = 50;
const ROUNDS = 2;
const SERVICE = 'shard-rel';

interface Fault {
  round: number;
  fault: string;
  restoreMs: number;
  boundMs: number;
}

afterAll(async () => {
  await killChildApps();
  await stopAllAgents();
  await stopAllClusters();
});

function fenced(host: string, port: number, serviceId: string, i: number): ShardChild {
  return startShardChild({
    host,
    port,
    service: SERVICE,
    serviceId,
    servicePort: 46_000 + i,
    mode: 'exclusive',
    partitions: PARTITIONS,
    ttl: `${TTL_MS / 1000}s`,
    settleMs: SETTLE_MS,
    handoffDelayMs: HANDOFF_MS,
    drainTimeoutMs: DRAIN_MS,
    lockDelay: `${LOCK_DELAY_MS / 1000}s`,
    fencedWriter: true,
    maxLifeMs: 600_000,
  });
}

/** Each child's last assignment and log tail, for a failure message. */
function state(children: readonly ShardChild[]): string {
  const expected = shardTable(
    children.map((c) => c.serviceId),
    PARTITIONS,
  );
  return children
    .map((c) => {
      const a = lastAssignment(c);
      return (
        `${c.serviceId}: owned ${JSON.stringify(a?.owned)} (table ${JSON.stringify(expected.owned(c.serviceId))}) ` +
        `members ${JSON.stringify(a?.members)} v${a?.version}\n${c.app.output().slice(-1_500)}`
      );
    })
    .join('\n');
}

/**
 * What the children acquired or released since `from` that the table change from the `before`
 * members to the `after` members does not move to or from them: only the table's moves may move.
 */
function movesOffTable(
  children: readonly ShardChild[],
  before: readonly string[],
  after: readonly string[],
  from: number,
): string[] {
  const old = shardTable([...before].sort(), PARTITIONS);
  const now = shardTable([...after].sort(), PARTITIONS);
  return children.flatMap((c) =>
    c.app
      .all('assignment')
      .filter((e) => e.t > from)
      .flatMap((e) => [
        ...(e.acquired as number[])
          .filter((p) => now.ownerOf(p) !== c.serviceId)
          .map((p) => `${c.serviceId} acquired p${p}`),
        ...(e.released as number[])
          .filter((p) => old.ownerOf(p) !== c.serviceId || now.ownerOf(p) === c.serviceId)
          .map((p) => `${c.serviceId} released p${p}`),
      ]),
  );
}

function describeOverlap([a, b]: [OwnershipRun, OwnershipRun]): string {
  return `p${a.p}: ${a.serviceId} [${a.from}, ${a.lastTrue}] token ${a.token} vs ${b.serviceId} [${b.from}, ${b.lastTrue}] token ${b.token}`;
}

describe('exclusive sharding under faults, 5 fenced writers on one dev agent', () => {
  let agent: ConsulAgent;
  beforeAll(async () => {
    agent = await startConsulAgent();
  });

  it(`join, SIGTERM, SIGKILL, SIGSTOP past the TTL, agent restart — ${ROUNDS} rounds: coverage back within the bound, no stale accepted write, no overlapping ownership`, async () => {
    const all: ShardChild[] = [];
    const live: ShardChild[] = [];
    const exitAt = new Map<ShardChild, number>();
    // A dead child's open run ends at its exit; a live one's now.
    const runsOf = (children: readonly ShardChild[]): OwnershipRun[] =>
      ownershipRuns(children, (c) => exitAt.get(c) ?? Date.now());
    let next = 0;
    const spawn = (): ShardChild => {
      const child = fenced(agent.bind, agent.httpPort, `${SERVICE}-${next}`, next++);
      child.app.onExit((exit) => exitAt.set(child, exit.at));
      all.push(child);
      live.push(child);
      return child;
    };
    const remove = (child: ShardChild): void => {
      live.splice(live.indexOf(child), 1);
    };
    const ids = (children: readonly ShardChild[]): string[] => children.map((c) => c.serviceId);
    const settle = (children: readonly ShardChild[], boundMs: number, what: string) =>
      waitFor(() => settledOn(children, ids(children), PARTITIONS), {
        timeoutMs: boundMs + 20_000,
        intervalMs: 10,
        message: `${what}: the live instances should own every partition once, on their table`,
      }).catch((error: Error) => {
        throw new Error(`${error.message}\n${state(children)}`, { cause: error });
      });
    const faults: Fault[] = [];
    const record = (round: number, fault: string, from: number, at: number, boundMs: number) =>
      faults.push({ round, fault, restoreMs: at - from, boundMs });
    const pausedChecks: string[] = [];
    const offTable: string[] = [];
    const restarts: { killedAt: number; upAt: number }[] = [];

    for (let i = 0; i < 5; i++) spawn();
    await Promise.all(live.map((c) => c.app.next('armed')));
    await settle(live, 20_000, 'start');

    for (let round = 1; round <= ROUNDS; round++) {
      // Join one: from its registration (ready) until the table with it is in force everywhere.
      let before = ids(live);
      let from = Date.now();
      const joiner = spawn();
      const ready = await joiner.app.next('ready');
      const joined = await settle(live, PLANNED_BOUND_MS, `round ${round} join`);
      record(round, 'join', ready.t, joined.at, PLANNED_BOUND_MS);
      offTable.push(...movesOffTable(live, before, ids(live), from));

      // SIGTERM one (the oldest live).
      [before, from] = [ids(live), Date.now()];
      const termed = live[0];
      termed.app.kill('SIGTERM');
      remove(termed);
      const afterTerm = await settle(live, PLANNED_BOUND_MS, `round ${round} SIGTERM`);
      record(round, 'SIGTERM', termed.app.signalledAt!, afterTerm.at, PLANNED_BOUND_MS);
      offTable.push(...movesOffTable(live, before, ids(live), from));
      await termed.app.exited;

      // SIGKILL one.
      [before, from] = [ids(live), Date.now()];
      const killed = live[0];
      killed.app.kill('SIGKILL');
      remove(killed);
      const afterKill = await settle(live, CRASH_BOUND_MS, `round ${round} SIGKILL`);
      record(round, 'SIGKILL', killed.app.signalledAt!, afterKill.at, CRASH_BOUND_MS);
      offTable.push(...movesOffTable(live, before, ids(live), from));

      // SIGSTOP one past its TTL: the others take its partitions and write with newer tokens;
      // then SIGCONT, and it must see owns(p) === false before writing again.
      const paused = live[0];
      const pausedOwned = lastAssignment(paused)!.owned;
      const others = live.filter((c) => c !== paused);
      paused.app.kill('SIGSTOP');
      const stoppedAt = paused.app.signalledAt!;
      const afterStop = await settle(others, CRASH_BOUND_MS, `round ${round} SIGSTOP`);
      record(round, 'SIGSTOP', stoppedAt, afterStop.at, CRASH_BOUND_MS);
      offTable.push(...movesOffTable(others, ids(live), ids(others), stoppedAt));
      const unwritten = () =>
        pausedOwned.filter(
          (p) => !fencedWrites(others).some((w) => w.p === p && w.accepted && w.t > stoppedAt),
        );
      await waitFor(() => unwritten().length === 0, {
        timeoutMs: 10_000,
        message: 'the new owners should have written every taken partition',
      }).catch((error: Error) => {
        const writes = fencedWrites(others).filter((w) => w.t > stoppedAt);
        const detail = unwritten().map(
          (p) =>
            `p${p}: owned by ${others.find((c) => lastAssignment(c)?.owned.includes(p))?.serviceId ?? 'none'}; ` +
            `runs ${JSON.stringify(runsOf(others).filter((r) => r.p === p))}; ` +
            `writes ${JSON.stringify(writes.filter((w) => w.p === p).slice(-3))}`,
        );
        throw new Error(`${error.message}\n${detail.join('\n')}\n${state(others)}`, {
          cause: error,
        });
      });
      paused.app.kill('SIGCONT');
      const contAt = paused.app.signalledAt!;
      const back = await settle(live, PLANNED_BOUND_MS + TTL_MS, `round ${round} SIGCONT`);
      record(round, 'SIGCONT (rejoin)', contAt, back.at, PLANNED_BOUND_MS + TTL_MS);
      // Its runs that began before the stop never saw owns(p) true again once it resumed (it
      // observes nothing between contAt and the SIGCONT: it is stopped).
      for (const run of runsOf([paused])) {
        if (run.from < stoppedAt && run.lastTrue >= contAt) {
          pausedChecks.push(`p${run.p} seen owned at ${run.lastTrue}, resumed at ${contAt}`);
        }
      }
      // Its accepted writes begun after SIGCONT carry a token newer than any accepted while it
      // slept (one begun before the stop may complete after SIGCONT: the store took it first).
      const whileStopped = fencedWrites(others).filter((w) => w.accepted && w.t > stoppedAt);
      for (const w of fencedWrites([paused])) {
        if (!w.accepted || w.startedAt < contAt) continue;
        const newer = whileStopped.filter((o) => o.p === w.p && o.t < contAt && o.token > w.token);
        if (newer.length > 0) pausedChecks.push(`p${w.p} accepted token ${w.token} after SIGCONT`);
      }

      // Restart the agent: a dev agent comes back empty (services, sessions, locks, the store).
      const killedAt = Date.now();
      await agent.restart();
      const upAt = Date.now();
      restarts.push({ killedAt, upAt });
      // Instances may re-register and re-acquire before restart() has seen the agent ready: an
      // ownership begun after the old agent was gone came through the new one.
      const newAgentFrom = killedAt + OLD_AGENT_GONE_MS;
      // Coverage back = every partition owned again through the restarted agent (a run begun
      // after it came up), on the table of the live members.
      const reowned = await waitFor(
        () => {
          const firsts = Array.from({ length: PARTITIONS }, (_, p) =>
            live
              .flatMap((c) => c.app.all('owning'))
              .find((e) => e.p === p && (e.from as number) > newAgentFrom),
          );
          return firsts.every(Boolean)
            ? Math.max(...firsts.map((e) => e!.from as number))
            : undefined;
        },
        {
          timeoutMs: CRASH_BOUND_MS + 20_000,
          intervalMs: 10,
          message: `round ${round}: re-owned after the agent restart`,
        },
      ).catch((error: Error) => {
        const missing = Array.from({ length: PARTITIONS }, (_, p) => p).filter(
          (p) =>
            !live
              .flatMap((c) => c.app.all('owning'))
              .some((e) => e.p === p && (e.from as number) > newAgentFrom),
        );
        throw new Error(`${error.message}; not re-owned: ${missing.join(',')}\n${state(live)}`, {
          cause: error,
        });
      });
      await settle(live, CRASH_BOUND_MS, `round ${round} agent restart`);
      record(round, 'agent restart', killedAt, reowned, CRASH_BOUND_MS);

      // Back to 5 for the next round.
      while (live.length < 5) {
        const extra = spawn();
        const t = (await extra.app.next('ready')).t;
        const topped = await settle(live, PLANNED_BOUND_MS, `round ${round} top-up join`);
        record(round, 'join', t, topped.at, PLANNED_BOUND_MS);
      }
    }

    // Everyone leaves; then every run is closed (a SIGKILLed one up to its exit).
    for (const child of live) child.app.process.stdin?.end();
    await Promise.all(all.map((c) => c.app.exited));
    const runs = runsOf(all);
    const overlaps = overlappingRuns(runs);
    const writes = fencedWrites(all);
    // The old agent's store ends at its SIGKILL, the new one's starts with its first answer.
    const stale = staleAcceptedWrites(
      writes,
      restarts.map((r) => r.killedAt + OLD_AGENT_GONE_MS),
    );
    const refused = writes.filter((w) => !w.accepted);
    // Accepted writes whose token was acquired before an agent restart but written after it.
    const crossEpoch = writes.filter(
      (w) =>
        w.accepted &&
        restarts.some(
          (r) =>
            w.t > r.upAt &&
            runs.some(
              (run) =>
                run.serviceId === w.serviceId &&
                run.p === w.p &&
                run.token === w.token &&
                run.from < r.killedAt,
            ),
        ),
    );

    const by = (name: string) => faults.filter((f) => f.fault === name).map((f) => f.restoreMs);
    reportReliability(
      'sharding',
      `exclusive, ${PARTITIONS} partitions, ${all.length} processes, ${ROUNDS} rounds: coverage back after ` +
        ['join', 'SIGTERM', 'SIGKILL', 'SIGSTOP', 'SIGCONT (rejoin)', 'agent restart']
          .map((f) => `${f} median=${median(by(f))}ms max=${max(by(f))}ms`)
          .join(', ') +
        ` (planned bound ${PLANNED_BOUND_MS}ms, crash bound ${CRASH_BOUND_MS}ms); writes ${writes.length}, ` +
        `stale accepted ${stale.length}, refused by the fence ${refused.length}, ` +
        `overlapping runs ${overlaps.length}/${runs.length}, old-epoch tokens accepted after a restart ${crossEpoch.length}`,
      {
        faults,
        writes: writes.length,
        stale,
        refused: refused.slice(0, 50),
        overlaps: overlaps.map(describeOverlap),
        crossEpoch: crossEpoch.slice(0, 50),
        pausedChecks,
      },
    );
    expect(stale).toEqual([]);
    expect(overlaps.map(describeOverlap)).toEqual([]);
    expect(pausedChecks).toEqual([]);
    expect(offTable).toEqual([]);
    expect(faults.filter((f) => f.restoreMs > f.boundMs)).toEqual([]);
  }, 600_000);
});

describe('exclusive sharding on a 3-server cluster, instances on two client agents', () => {
  it('the leader SIGKILLed: no partition moves, no instance releases anything, every assignment unchanged', async () => {
    const cluster = await startConsulCluster({ extraClientBinds: ['127.0.0.6'] });
    const children = Array.from({ length: 5 }, (_, i) => {
      const agent = cluster.clients[i % 2];
      return fenced(agent.bind, agent.httpPort, `${SERVICE}-c${i}`, 20 + i);
    });
    const members = children.map((c) => c.serviceId);
    await Promise.all(children.map((c) => c.app.next('armed')));
    const before = await waitFor(() => settledOn(children, members, PARTITIONS), {
      timeoutMs: 30_000,
      intervalMs: 10,
      message: 'the 5 instances should settle on one table',
    });
    const assignmentsBefore = children.map((c) => c.app.all('assignment').length);
    const ownedBefore = children.map((c) => lastAssignment(c)!.owned);

    const oldLeader = await cluster.leader();
    if (!oldLeader) throw new Error('no leader before the kill');
    const killedAt = Date.now();
    await oldLeader.kill();
    await waitFor(
      async () => {
        const leader = await cluster.leader();
        return leader && leader !== oldLeader ? leader : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 50, message: 'a new leader should be elected' },
    );
    const electionMs = Date.now() - killedAt;
    // Counted, not slept: every partition's owner keeps writing (owns(p) true, its token
    // accepted) for longer than a TTL + lock-delay after the election — a lapse, an invalidated
    // session or a lost lock would stop it within that time. Writes go every 50 ms.
    const electedAt = Date.now();
    const windowWrites = Math.ceil((TTL_MS + LOCK_DELAY_MS + 1_000) / 50);
    await waitFor(
      () => {
        const after = fencedWrites(children).filter((w) => w.accepted && w.t > electedAt);
        return Array.from({ length: PARTITIONS }, (_, p) => p).every(
          (p) => after.filter((w) => w.p === p).length >= windowWrites,
        );
      },
      {
        timeoutMs: 30_000,
        intervalMs: 100,
        message: `every partition written ${windowWrites}× by its owner after the election`,
      },
    );
    const changes = children.flatMap((c, i) => c.app.all('assignment').slice(assignmentsBefore[i]));
    const released = changes.flatMap((e) => e.released as number[]);
    const writes = fencedWrites(children);
    const overlaps = overlappingRuns(ownershipRuns(children, () => Date.now()));
    reportReliability(
      'sharding-cluster',
      `leader SIGKILL → new leader in ${electionMs}ms; ${children.length} instances on 2 client agents, ` +
        `${PARTITIONS} partitions: assignment changes ${changes.length}, released ${released.length}, ` +
        `writes ${writes.length} (stale accepted ${staleAcceptedWrites(writes).length}), overlapping runs ${overlaps.length}`,
      { electionMs, changes, ownedBefore, tableMembers: before.table.members },
    );
    expect(released).toEqual([]);
    expect(changes).toEqual([]);
    expect(children.map((c) => lastAssignment(c)!.owned)).toEqual(ownedBefore);
    expect(staleAcceptedWrites(writes)).toEqual([]);
    expect(overlaps.map(describeOverlap)).toEqual([]);

    for (const child of children) child.app.process.stdin?.end();
    await Promise.all(children.map((c) => c.app.exited));
    await cluster.stop();
  }, 180_000);
});

describe('cooperative sharding under faults, 5 instances on one dev agent', () => {
  let agent: ConsulAgent;
  beforeAll(async () => {
    agent = await startConsulAgent();
  });

  it('join, SIGTERM, SIGKILL, SIGSTOP past the TTL then SIGCONT, agent restart: the live members’ table in force everywhere again within the bound', async () => {
    const live: ShardChild[] = [];
    let next = 0;
    const spawn = (): ShardChild => {
      const child = startShardChild({
        host: agent.bind,
        port: agent.httpPort,
        service: `${SERVICE}-coop`,
        serviceId: `${SERVICE}-coop-${next}`,
        servicePort: 47_000 + next++,
        mode: 'cooperative',
        partitions: PARTITIONS,
        ttl: `${TTL_MS / 1000}s`,
        settleMs: SETTLE_MS,
        handoffDelayMs: HANDOFF_MS,
        drainTimeoutMs: DRAIN_MS,
        maxLifeMs: 600_000,
      });
      live.push(child);
      return child;
    };
    const remove = (child: ShardChild): void => {
      live.splice(live.indexOf(child), 1);
    };
    const settle = (children: readonly ShardChild[], boundMs: number, what: string) =>
      waitFor(
        () =>
          settledOn(
            children,
            children.map((c) => c.serviceId),
            PARTITIONS,
          ),
        { timeoutMs: boundMs + 20_000, intervalMs: 10, message: `cooperative ${what}` },
      ).catch((error: Error) => {
        throw new Error(`${error.message}\n${state(children)}`, { cause: error });
      });
    const faults: Fault[] = [];
    const record = (fault: string, from: number, at: number, boundMs: number) =>
      faults.push({ round: 1, fault, restoreMs: at - from, boundMs });

    for (let i = 0; i < 5; i++) spawn();
    await Promise.all(live.map((c) => c.app.next('armed')));
    await settle(live, 20_000, 'start');

    const ids = (children: readonly ShardChild[]): string[] => children.map((c) => c.serviceId);
    const offTable: string[] = [];
    let before = ids(live);
    let from = Date.now();
    const joiner = spawn();
    const ready = await joiner.app.next('ready');
    record('join', ready.t, (await settle(live, PLANNED_BOUND_MS, 'join')).at, PLANNED_BOUND_MS);
    offTable.push(...movesOffTable(live, before, ids(live), from));

    [before, from] = [ids(live), Date.now()];
    const termed = live[0];
    termed.app.kill('SIGTERM');
    remove(termed);
    const afterTerm = await settle(live, PLANNED_BOUND_MS, 'SIGTERM');
    record('SIGTERM', termed.app.signalledAt!, afterTerm.at, PLANNED_BOUND_MS);
    offTable.push(...movesOffTable(live, before, ids(live), from));

    [before, from] = [ids(live), Date.now()];
    const killed = live[0];
    killed.app.kill('SIGKILL');
    remove(killed);
    const afterKill = await settle(live, CRASH_BOUND_MS, 'SIGKILL');
    record('SIGKILL', killed.app.signalledAt!, afterKill.at, CRASH_BOUND_MS);
    offTable.push(...movesOffTable(live, before, ids(live), from));

    const paused = live[0];
    const others = live.filter((c) => c !== paused);
    paused.app.kill('SIGSTOP');
    const afterStop = await settle(others, CRASH_BOUND_MS, 'SIGSTOP');
    record('SIGSTOP', paused.app.signalledAt!, afterStop.at, CRASH_BOUND_MS);
    offTable.push(...movesOffTable(others, ids(live), ids(others), paused.app.signalledAt!));
    paused.app.kill('SIGCONT');
    const back = await settle(live, PLANNED_BOUND_MS + TTL_MS, 'SIGCONT');
    record('SIGCONT (rejoin)', paused.app.signalledAt!, back.at, PLANNED_BOUND_MS + TTL_MS);

    // The restarted dev agent comes back empty: every instance registers again (self-repair)
    // and the table of all of them is in force everywhere again.
    const killedAt = Date.now();
    await agent.restart();
    const all = ids(live).sort();
    const restoredAt = await waitFor(
      async () =>
        JSON.stringify(await agent.api().passingIds(`${SERVICE}-coop`)) === JSON.stringify(all) &&
        settledOn(live, all, PARTITIONS) &&
        Date.now(),
      { timeoutMs: CRASH_BOUND_MS + 20_000, intervalMs: 20, message: 'cooperative agent restart' },
    );
    record('agent restart', killedAt, restoredAt, CRASH_BOUND_MS);

    for (const child of live) child.app.process.stdin?.end();
    await Promise.all([...live, termed, killed].map((c) => c.app.exited));
    const by = (name: string) => faults.filter((f) => f.fault === name).map((f) => f.restoreMs);
    reportReliability(
      'sharding-cooperative',
      `cooperative, ${PARTITIONS} partitions: the live members' table in force everywhere again after ` +
        ['join', 'SIGTERM', 'SIGKILL', 'SIGSTOP', 'SIGCONT (rejoin)', 'agent restart']
          .map((f) => `${f} ${max(by(f))}ms`)
          .join(', ') +
        ` (planned bound ${PLANNED_BOUND_MS}ms, crash bound ${CRASH_BOUND_MS}ms)`,
      { faults },
    );
    expect(offTable).toEqual([]);
    expect(faults.filter((f) => f.restoreMs > f.boundMs)).toEqual([]);
  }, 300_000);
});
