// 4. Scale: a 1,000-instance service and 200 more watched names, through a counting proxy; then
// watch churn: subscribers of 50 names coming and going while 20 stay and discover() runs.
import { execFileSync } from 'node:child_process';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { seededRandom, startCountingProxy, waitFor } from '../.tmp/toolkit/toolkit.js';
import { discoveryApp, moduleOptions, watchReady } from './apps.mjs';
import { summarize } from './stats.mjs';
import { collect, timeBatches, timeEach } from './measure.mjs';

const BIG = 'bench-big';
const BIG_INSTANCES = 1_000;
const SMALL_NAMES = 200;
const IDLE_WINDOW_MS = 10_000;
const MAX_LONG_POLLS = 64; // the default watch.maxLongPolls
const MAX_SOCKETS = 32; // the default consul.maxSockets
const CHURN_CYCLES = 1_000;
const CHURN_NAMES = 50;
const CHURN_STEADY = 20;
const CHURN_UNWATCHED = 10;
const CHURN_DISCOVER_PER_SECOND = 100;
const CHURN_MEAN_INTERVAL_MS = 20;
const CHURN_MAX_HOLD_MS = 400;

/** Established TCP connections to `port` as seen by the kernel (ss), or undefined without ss. */
function ssCount(port) {
  try {
    const out = execFileSync('ss', ['-tnH', 'state', 'established', `( dport = :${port} )`], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return out.split('\n').filter((l) => l.trim()).length;
  } catch {
    return undefined;
  }
}

export async function scaleSection({ agent, api, report }) {
  const section = '4. Scale (1,000 instances + 200 names)';
  const bigIds = Array.from(
    { length: BIG_INSTANCES },
    (_, i) => `${BIG}-${String(i).padStart(4, '0')}`,
  );
  const smallNames = Array.from(
    { length: SMALL_NAMES },
    (_, i) => `bench-n-${String(i).padStart(3, '0')}`,
  );

  const tReg = process.hrtime.bigint();
  await api.inBatches(bigIds, 50, (id, i) => api.register(BIG, id, 40_000 + i, { Tags: ['big'] }));
  await api.inBatches(smallNames, 50, (name, i) => api.register(name, `${name}-0`, 45_000 + i));
  const registerMs = Number(process.hrtime.bigint() - tReg) / 1e6;
  await waitFor(async () => (await api.passing(BIG)).length === BIG_INSTANCES, {
    timeoutMs: 10_000,
    message: `${BIG_INSTANCES} passing instances of ${BIG}`,
  });

  const proxy = await startCountingProxy(agent.httpPort);
  const app = await discoveryApp(moduleOptions(proxy, { name: 'bench-scale-self', port: 31_004 }));
  const subscriptions = [];
  try {
    const svc = app.service;
    collect();
    const heapBefore = process.memoryUsage().heapUsed;

    proxy.resetPeak();
    const requestsBeforeWatching = proxy.requestLines.length;
    const tWatch = process.hrtime.bigint();
    subscriptions.push(await watchReady(svc, BIG)); // first: gets its own long-poll
    subscriptions.push(...(await Promise.all(smallNames.map((name) => watchReady(svc, name)))));
    const watchAllMs = Number(process.hrtime.bigint() - tWatch) / 1e6;
    const peakWhileStarting = proxy.peakConnections;
    const requestsWhileStarting = proxy.requestLines.length - requestsBeforeWatching;
    if (svc.snapshot(BIG)?.length !== BIG_INSTANCES) throw new Error(`${BIG} snapshot incomplete`);
    for (const name of smallNames) {
      if (svc.snapshot(name)?.length !== 1) throw new Error(`${name} snapshot incomplete`);
    }
    // Settled: only blocking queries left in flight, for a while.
    let quietSince = Date.now();
    await waitFor(
      () => {
        if (proxy.inFlight !== proxy.longPollsInFlight) quietSince = Date.now();
        return Date.now() - quietSince >= 500;
      },
      { timeoutMs: 10_000, intervalMs: 10, message: 'only long-polls in flight' },
    );
    collect();
    const heapAfter = process.memoryUsage().heapUsed;

    const memoryCall = () => svc.discover(BIG);
    const batched = summarize(
      await timeBatches(memoryCall, { batches: 300, batchSize: 100, warmup: 3_000 }),
    );
    const single = summarize(await timeEach(memoryCall, { iterations: 5_000, warmup: 500 }));
    // The same 1,000 instances read from the agent (a tag query nobody watches).
    const direct = summarize(
      await timeEach(() => svc.discover(BIG, { tag: 'big' }), { iterations: 60, warmup: 5 }),
    );

    // Idle window: nothing changes in Consul; count every request the process sends.
    await sleep(300);
    const before = proxy.requestLines.length;
    const conn = { open: [], longPolls: [], ss: [] };
    const sampleConnections = () => {
      conn.open.push(proxy.openConnections);
      conn.longPolls.push(proxy.longPollsInFlight);
      const ss = ssCount(proxy.port);
      if (ss !== undefined) conn.ss.push(ss);
    };
    const tIdle = Date.now();
    sampleConnections();
    while (Date.now() - tIdle < IDLE_WINDOW_MS) {
      await sleep(1_000);
      sampleConnections();
    }
    const windowS = (Date.now() - tIdle) / 1000;
    const idle = proxy.log.slice(before);
    const heartbeats = idle.filter((r) => r.path.includes('/v1/agent/check/pass/')).length;
    const longPollReissues = idle.filter((r) => /[?&]index=/.test(r.path)).length;
    const other = idle.length - heartbeats - longPollReissues;
    const range = (xs) =>
      Math.min(...xs) === Math.max(...xs) ? `${xs[0]}` : `${Math.min(...xs)}–${Math.max(...xs)}`;

    const watchedNames = SMALL_NAMES + 1;
    const expectedLongPolls =
      Math.min(watchedNames, MAX_LONG_POLLS) + (watchedNames > MAX_LONG_POLLS ? 2 : 0);
    report.row({
      section,
      name: `watched discover() on ${BIG_INSTANCES} instances — per call from batches of 100 (30k calls)`,
      unit: 'ns',
      stats: batched,
      ratio: { value: direct.p50 / batched.p50, label: 'direct/watched' },
      target: {
        text: 'p50 ≤ 2 µs, ≥ 300× direct',
        met: batched.p50 <= 2_000 && direct.p50 / batched.p50 >= 300,
      },
    });
    report.row({
      section,
      name: `watched discover() on ${BIG_INSTANCES} instances — each call timed`,
      unit: 'ns',
      stats: single,
    });
    report.row({
      section,
      name: `unwatched discover() of the same ${BIG_INSTANCES} (tag query, via proxy)`,
      unit: 'ns',
      stats: direct,
    });
    report.row({
      section,
      name: `heap used after gc: before watching → after ${watchedNames} names`,
      unit: 'text',
      value: `${(heapBefore / 2 ** 20).toFixed(1)} → ${(heapAfter / 2 ** 20).toFixed(1)} MiB (+${((heapAfter - heapBefore) / 2 ** 20).toFixed(1)} MiB)`,
    });
    report.row({
      section,
      name: `time to first set for all ${watchedNames} watches`,
      unit: 'text',
      value: `${watchAllMs.toFixed(0)} ms (registering the ${BIG_INSTANCES + SMALL_NAMES} instances took ${(registerMs / 1000).toFixed(1)} s)`,
    });
    report.row({
      section,
      name: `connections to the agent: peak while starting the ${watchedNames} watches (proxy)`,
      unit: 'text',
      value: `${peakWhileStarting} (${requestsWhileStarting} requests until all had a set)`,
    });
    report.row({
      section,
      name: 'connections to the agent while idle (proxy / ss -tn)',
      unit: 'text',
      value: `${range(conn.open)} / ${conn.ss.length ? range(conn.ss) : 'n/a'}`,
    });
    report.row({
      section,
      name: `long-polls in flight while idle (expected ${expectedLongPolls}: ${MAX_LONG_POLLS} + 2 change feed)`,
      unit: 'text',
      value: range(conn.longPolls),
      target: {
        text: `= ${expectedLongPolls}`,
        met: conn.longPolls.every((n) => n === expectedLongPolls),
      },
    });
    report.row({
      section,
      name: `requests/s while idle beyond the open long-polls (${windowS.toFixed(1)} s window)`,
      unit: 'text',
      value: `${((longPollReissues + other) / windowS).toFixed(2)} /s (${longPollReissues} long-poll re-issues, ${other} other)`,
      target: { text: '0 /s', met: longPollReissues + other === 0 },
    });
    report.row({
      section,
      name: 'requests/s while idle: own TTL heartbeat (10 s TTL, every 1/3)',
      unit: 'text',
      value: `${(heartbeats / windowS).toFixed(2)} /s (${heartbeats} passes)`,
    });
    const churn = await churnRows({ agent, smallNames, section, report });
    return {
      churn,
      peakWhileStarting,
      requestsWhileStarting,
      registerMs,
      watchAllMs,
      heapBefore,
      heapAfter,
      batched,
      single,
      direct,
      connections: conn,
      idle: { windowS, total: idle.length, heartbeats, longPollReissues, other, requests: idle },
      expectedLongPolls,
    };
  } finally {
    for (const s of subscriptions) s.unsubscribe();
    await app.close();
    await proxy.close();
  }
}

/**
 * 1,000 subscribe/unsubscribe cycles over 50 names at random (seeded) intervals, 20 other names
 * watched throughout and 100 discover() calls per second of 10 unwatched names, on an app of its
 * own with the default limits: the connections the agent holds for it (open, plus long-polls
 * abandoned mid-wait, which a 1.8 agent keeps until their wait ends), requests/s, discover() p99.
 */
async function churnRows({ agent, smallNames, section, report }) {
  const random = seededRandom(16);
  const churned = smallNames.slice(0, CHURN_NAMES);
  const steady = smallNames.slice(CHURN_NAMES, CHURN_NAMES + CHURN_STEADY);
  const unwatched = smallNames.slice(100, 100 + CHURN_UNWATCHED);
  const bound = MAX_SOCKETS + MAX_LONG_POLLS + 2;
  const proxy = await startCountingProxy(agent.httpPort);
  const app = await discoveryApp(moduleOptions(proxy, { register: false }));
  const subscriptions = [];
  try {
    const svc = app.service;
    subscriptions.push(...(await Promise.all(steady.map((name) => watchReady(svc, name)))));
    proxy.resetPeak();
    const requestsBefore = proxy.requestLines.length;
    const latencies = [];
    let failed = 0;
    let calls = 0;
    let abandonedPeak = 0;
    const calling = [];
    const started = Date.now();
    const caller = setInterval(() => {
      const due = Math.floor(((Date.now() - started) * CHURN_DISCOVER_PER_SECOND) / 1_000);
      for (; calls < due; calls++) {
        const name = unwatched[Math.floor(random() * unwatched.length)];
        const t0 = process.hrtime.bigint();
        calling.push(
          svc.discover(name).then(
            () => latencies.push(Number(process.hrtime.bigint() - t0)),
            () => failed++,
          ),
        );
      }
      abandonedPeak = Math.max(abandonedPeak, proxy.abandonedConnections);
    }, 1_000 / CHURN_DISCOVER_PER_SECOND);
    const cycles = [];
    for (let i = 0; i < CHURN_CYCLES; i++) {
      const name = churned[Math.floor(random() * churned.length)];
      const hold = Math.floor(random() * CHURN_MAX_HOLD_MS);
      const sub = svc.watch(name).subscribe();
      cycles.push(sleep(hold).then(() => sub.unsubscribe()));
      await sleep(random() * 2 * CHURN_MEAN_INTERVAL_MS);
    }
    await Promise.all(cycles);
    const seconds = (Date.now() - started) / 1000;
    clearInterval(caller);
    await Promise.all(calling);
    const requests = proxy.requestLines.length - requestsBefore;
    const stats = summarize(latencies);
    report.row({
      section,
      name: `churn: unwatched discover() during ${CHURN_CYCLES} subscribe/unsubscribe cycles over ${CHURN_NAMES} names (+${CHURN_STEADY} watched, ${CHURN_DISCOVER_PER_SECOND}/s)`,
      unit: 'ns',
      stats,
      target: { text: '0 failed', met: failed === 0 },
    });
    report.row({
      section,
      name: `churn: connections the agent holds at peak — open + abandoned (bound maxSockets + maxLongPolls + 2 = ${bound})`,
      unit: 'text',
      value: `${proxy.peakHeldConnections} (open peak ${proxy.peakConnections}, abandoned peak ${abandonedPeak}; ${proxy.totalConnections} opened in all)`,
      target: { text: `≤ ${bound}`, met: proxy.peakHeldConnections <= bound },
    });
    report.row({
      section,
      name: 'churn: requests/s to the agent during the churn (all kinds)',
      unit: 'text',
      value: `${(requests / seconds).toFixed(0)} /s (${requests} in ${seconds.toFixed(1)} s; ${calls} discover(), ${failed} failed)`,
    });
    return {
      seconds,
      requests,
      calls,
      failed,
      discover: stats,
      peakHeld: proxy.peakHeldConnections,
      peakOpen: proxy.peakConnections,
      abandonedPeak,
      opened: proxy.totalConnections,
      bound,
    };
  } finally {
    for (const s of subscriptions) s.unsubscribe();
    await app.close();
    await proxy.close();
  }
}
