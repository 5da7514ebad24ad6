// 5. Sharding failover, exclusive mode, with child processes (test/support/fixtures/child-app.mjs
// on dist/), all times from the children's own events (one machine, one clock):
// - planned handoff gap: SIGTERM of an owner → the new owner's first owns(p) === true, per
//   partition it owned;
// - crash failover: SIGKILL of an owner → the same;
// - membership change → new table on every instance: a join, from the new child's registration
//   (its `ready`) until every instance has the table with it in force (its `table` event).
// Each fault is followed by a join that brings the group back to INSTANCES.
import { killChildApps, startShardChild, waitFor } from '../.tmp/toolkit/toolkit.js';
import { summarize } from './stats.mjs';

const INSTANCES = 5;
const PARTITIONS = 32;
const MIN_SAMPLES = 20;
const TTL_MS = 3_000;
const LOCK_DELAY_MS = 1_000;
const SETTLE_MS = 200;
const DRAIN_MS = 1_000;
const SERVICE = 'bench-shard';
const PLANNED_TARGET_MS = DRAIN_MS + SETTLE_MS + 100;
const CRASH_TARGET_MS = TTL_MS + LOCK_DELAY_MS + 1_000;

export async function shardingFailoverSection({ agent, report }) {
  let next = 0;
  const live = [];
  const spawn = () => {
    const i = next++;
    const child = startShardChild({
      host: agent.bind,
      port: agent.httpPort,
      service: SERVICE,
      serviceId: `${SERVICE}-${i}`,
      servicePort: 32_000 + i,
      mode: 'exclusive',
      partitions: PARTITIONS,
      ttl: `${TTL_MS / 1000}s`,
      settleMs: SETTLE_MS,
      handoffDelayMs: 100,
      drainTimeoutMs: DRAIN_MS,
      lockDelay: `${LOCK_DELAY_MS / 1000}s`,
      maxLifeMs: 600_000,
    });
    live.push(child);
    return child;
  };
  /** Every live child owns its part and has the table of exactly the live members in force. */
  const settled = () => {
    const ids = new Set(live.map((c) => c.serviceId));
    let owned = 0;
    for (const child of live) {
      const owners = child.app.last('table')?.owners;
      if (!owners || owners.some((o) => !ids.has(o))) return false;
      if (new Set(owners).size !== ids.size) return false;
      const mine = owners.flatMap((o, p) => (o === child.serviceId ? [p] : []));
      const a = child.app.last('assignment');
      if (JSON.stringify(a?.owned) !== JSON.stringify(mine)) return false;
      owned += mine.length;
    }
    return owned === PARTITIONS;
  };
  const waitSettled = (what) =>
    waitFor(settled, { timeoutMs: 30_000, intervalMs: 10, message: `bench sharding: ${what}` });

  const joins = [];
  const join = async () => {
    const child = spawn();
    const ready = (await child.app.next('ready')).t;
    await waitSettled('settle after a join');
    // Per instance: the first table in force after `ready` that has the new member.
    const seen = live.map(
      (c) =>
        c.app.all('table').find((e) => e.t >= ready && e.owners.includes(child.serviceId))?.t ??
        NaN,
    );
    joins.push((Math.max(...seen) - ready) * 1e6);
  };
  /** Signals the owner of the most partitions; returns the new owners' gaps in ns. */
  const fault = async (signal) => {
    const victim = live.reduce((a, b) =>
      (a.app.last('assignment')?.owned.length ?? 0) >= (b.app.last('assignment')?.owned.length ?? 0)
        ? a
        : b,
    );
    const owned = victim.app.last('assignment').owned;
    const counts = new Map(live.map((c) => [c, c.app.all('owning').length]));
    victim.app.kill(signal);
    const at = victim.app.signalledAt;
    live.splice(live.indexOf(victim), 1);
    await waitSettled(`settle after ${signal}`);
    await victim.app.exited;
    const firstOwned = new Map();
    for (const child of live) {
      for (const e of child.app.all('owning').slice(counts.get(child))) {
        if (owned.includes(e.p) && !firstOwned.has(e.p)) firstOwned.set(e.p, e.from);
      }
    }
    if (firstOwned.size !== owned.length)
      throw new Error(`${signal}: not every partition re-owned`);
    return [...firstOwned.values()].map((from) => (from - at) * 1e6);
  };

  try {
    for (let i = 0; i < INSTANCES; i++) spawn();
    await waitSettled('start');
    const planned = [];
    const crash = [];
    while (planned.length < MIN_SAMPLES || joins.length < MIN_SAMPLES / 2) {
      planned.push(...(await fault('SIGTERM')));
      await join();
    }
    while (crash.length < MIN_SAMPLES) {
      crash.push(...(await fault('SIGKILL')));
      await join();
    }
    for (const child of live) child.app.process.stdin?.end();
    await Promise.all(live.map((c) => c.app.exited));

    const s = {
      planned: summarize(planned),
      crash: summarize(crash),
      join: summarize(joins),
    };
    const section = '5. Sharding failover (exclusive, 5 processes, 32 partitions)';
    const target = (stats, ms) => ({
      text: `p99 ≤ ${ms} ms`,
      met: stats.p99 <= ms * 1e6,
    });
    report.row({
      section,
      name: 'planned handoff gap: SIGTERM → new owner owns(p)',
      unit: 'ns',
      stats: s.planned,
      note: 'drain + settleMs + ~100 ms',
      target: target(s.planned, PLANNED_TARGET_MS),
    });
    report.row({
      section,
      name: 'crash failover: SIGKILL → new owner owns(p)',
      unit: 'ns',
      stats: s.crash,
      note: 'ttl 3s + lockDelay 1s + 1 s',
      target: target(s.crash, CRASH_TARGET_MS),
    });
    report.row({
      section,
      name: 'join: registered → new table on every instance',
      unit: 'ns',
      stats: s.join,
      note: `settleMs ${SETTLE_MS}`,
    });
    return s;
  } finally {
    await killChildApps();
  }
}
