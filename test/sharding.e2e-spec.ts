import {
  killChildApps,
  lastAssignment,
  lastTable,
  settledOn,
  startConsulAgent,
  startShardChild,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// Sharding with real processes (README "Sharding"): 5 child apps
// (test/support/fixtures/child-app.mjs) shard 64 partitions on one dev agent. Everything
// asserted comes from the children's own events (their assignments$) or from Consul:
// - once settled, every partition is owned by exactly one instance, each instance owns what
//   ShardTable computes from the member set, and all 5 report that same member set;
// - a SIGTERM'd instance's partitions are owned again within drain + settleMs + handoffDelayMs
//   + a margin, and only the partitions the table moves change owner.

const INSTANCES = 5;
const PARTITIONS = 64;
const SETTLE_MS = 200;
const HANDOFF_MS = 100;
const DRAIN_MS = 1_000;
const MARGIN_MS = 1_500; // two loaded cores: 5 Nest processes and the agent
const HANDOVER_BOUND_MS = DRAIN_MS + SETTLE_MS + HANDOFF_MS + MARGIN_MS;

let agent: ConsulAgent;

beforeAll(async () => {
  agent = await startConsulAgent();
});
afterAll(async () => {
  await killChildApps();
  await stopAllAgents();
});

describe.each(['cooperative', 'exclusive'] as const)('%s sharding, 5 processes', (mode) => {
  it('settles on one table, hands a SIGTERMed instance over within the bound, moves only what the table moves', async () => {
    const service = `shard-${mode}`;
    const ids = Array.from({ length: INSTANCES }, (_, i) => `${service}-${i}`);
    const children = ids.map((serviceId, i) =>
      startShardChild({
        host: agent.bind,
        port: agent.httpPort,
        service,
        serviceId,
        servicePort: 45_000 + i,
        mode,
        partitions: PARTITIONS,
        settleMs: SETTLE_MS,
        handoffDelayMs: HANDOFF_MS,
        drainTimeoutMs: DRAIN_MS,
        lockDelay: '1s',
        ttl: '3s',
      }),
    );
    await Promise.all(children.map((c) => c.app.next('armed')));

    const before = await waitFor(() => settledOn(children, ids, PARTITIONS), {
      timeoutMs: 20_000,
      intervalMs: 10,
      message: `5 children should settle on one table (${mode})`,
    });
    // Union = every partition, pairwise disjoint; the same member set on all 5.
    const owned = ids.map((id) => before.cover.owned.get(id)!);
    expect(new Set(owned.flat()).size).toBe(PARTITIONS);
    expect(owned.flat()).toHaveLength(PARTITIONS);
    // settledOn compared each child's table in force (its `table` event) with ShardTable's for
    // the 5 (an assignment event comes only when owned() changes, so its members may be older).
    for (const child of children) expect(new Set(lastTable(child))).toEqual(new Set(ids));
    for (const o of owned)
      expect(o.length).toBeGreaterThanOrEqual(Math.floor(PARTITIONS / INSTANCES));
    if (mode === 'exclusive') {
      // Consul holds one lock per partition, by 5 sessions, and the children report its token.
      const locks = await agent.api().request('GET', `/v1/kv/athomic/sharding/${service}/?recurse`);
      const entries = locks.json as { Key: string; Session?: string }[];
      expect(entries.filter((e) => e.Session)).toHaveLength(PARTITIONS);
      expect(new Set(entries.map((e) => e.Session)).size).toBe(INSTANCES);
    }

    // SIGTERM the instance that owns partition 0.
    const victim = children.find((c) => lastAssignment(c)!.owned.includes(0))!;
    const survivors = children.filter((c) => c !== victim);
    const survivorIds = survivors.map((c) => c.serviceId);
    const eventsBefore = new Map(survivors.map((c) => [c, c.app.all('assignment').length]));
    victim.app.kill('SIGTERM');
    const signalledAt = victim.app.signalledAt!;
    const after = await waitFor(() => settledOn(survivors, survivorIds, PARTITIONS), {
      timeoutMs: HANDOVER_BOUND_MS + 10_000,
      intervalMs: 10,
      message: `the 4 survivors should settle on the table without ${victim.serviceId}`,
    });
    const handoverMs = after.at - signalledAt;
    const exit = await victim.app.exited;
    expect(exit.signal ?? exit.code).toBe('SIGTERM');
    expect(victim.app.output()).not.toMatch(/\[error\]/);

    // Only what the table moves: each survivor acquired exactly new − old and released old − new,
    // as its own assignment events since the signal say.
    for (const child of survivors) {
      const id = child.serviceId;
      const was = new Set(before.table.owned(id));
      const now = new Set(after.table.owned(id));
      const events = child.app.all('assignment').slice(eventsBefore.get(child));
      const acquired = events.flatMap((e) => e.acquired as number[]).sort((a, b) => a - b);
      const released = events.flatMap((e) => e.released as number[]).sort((a, b) => a - b);
      expect(acquired).toEqual([...now].filter((p) => !was.has(p)));
      expect(released).toEqual([...was].filter((p) => !now.has(p)));
    }
    // The victim's partitions all moved; of the others, only the few the table rebalances.
    const moved = Array.from({ length: PARTITIONS }, (_, p) => p).filter(
      (p) => before.table.ownerOf(p) !== after.table.ownerOf(p),
    );
    const victimOwned = before.table.owned(victim.serviceId);
    expect(moved.filter((p) => !victimOwned.includes(p)).length).toBeLessThan(PARTITIONS / 4);

    process.stdout.write(
      `\n[sharding e2e] ${mode}: settled table 5×${PARTITIONS}; SIGTERM → handed over in ${handoverMs} ms ` +
        `(bound ${HANDOVER_BOUND_MS} ms), moved ${moved.length} partitions (${victimOwned.length} of the victim)\n`,
    );
    expect(handoverMs).toBeLessThanOrEqual(HANDOVER_BOUND_MS);

    // The survivors leave by themselves when their stdin closes (no open handles).
    for (const child of survivors) child.app.process.stdin?.end();
    await Promise.all(survivors.map((c) => c.app.exited));
  }, 60_000);
});
