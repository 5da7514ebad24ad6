// 7b. Latency-aware balancing: three instances behind one name, one answering 10× slower than the
// others (test/support/fixtures/echo-servers.mjs delays). p50/p99 per request for round-robin,
// least-request and p2c-ewma, next to the same load on three healthy instances (round-robin), all
// in one run, in two scenarios: a service answering in 20 ms called by 8 concurrent loops (the
// target applies), and one that queues — 5 ms answers, 32 loops, ~4,000 requests/s on the
// 2-core machine — shown for what the prescribed cost does there: latency × (in flight + 1) prices a 5 ms
// instance with ~13 requests in flight above a 50 ms one with none, and the peak-EWMA of a 5 ms
// instance follows its own tail (README "Calling a service by name"). Steady state: one client
// per configuration, each warmed under the same load for WARM_MS (the EWMA's 10 s decay: a fresh
// client's first costs carry its connection setup), then interleaved rounds. Target: p2c-ewma
// p99 ≤ 1.5× the healthy baseline's.
import { startEchoServers, tapHttpAttempts } from '../.tmp/toolkit/toolkit.js';
import { DiscoveryHttpClient } from '../dist/index.js';
import { discoveryApp, moduleOptions } from './apps.mjs';
import { percentile, summarize } from './stats.mjs';

const SCENARIOS = [
  { fastMs: 20, slowMs: 200, concurrency: 8, perRound: 1_500, target: true },
  { fastMs: 5, slowMs: 50, concurrency: 32, perRound: 3_000, target: false },
];
const WARM_MS = 10_000;
const ROUNDS = 4;
const P99_TARGET = 1.5;

/** `count` GETs of `url` (or as many as fit in `ms`) by `width` workers; each latency in ns. */
async function latencies(http, url, width, { count = Infinity, ms = Infinity }) {
  const samples = [];
  let left = count;
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (left-- > 0 && performance.now() < end) {
        const t0 = process.hrtime.bigint();
        const response = await http.fetch(url);
        const text = await response.text();
        if (text !== 'ok') throw new Error(`unexpected answer ${text}`);
        samples.push(Number(process.hrtime.bigint() - t0));
      }
    }),
  );
  return samples;
}

export async function httpBalancingSection(ctx) {
  const results = {};
  for (const scenario of SCENARIOS) {
    results[`${scenario.fastMs}/${scenario.slowMs} ms, ${scenario.concurrency} concurrent`] =
      await balancingScenario(ctx, scenario);
  }
  return results;
}

async function balancingScenario({ agent, api, report }, scenario) {
  const { fastMs, slowMs, concurrency, perRound, target } = scenario;
  const delays = [fastMs, fastMs, fastMs, fastMs, fastMs, slowMs];
  const servers = await startEchoServers(delays.length, delays);
  const ids = [];
  try {
    await api.inBatches(servers.ports, delays.length, async (port, i) => {
      const service = `${i < 3 ? 'bench-healthy' : 'bench-skewed'}-${fastMs}`;
      ids.push(`${service}-${i}`);
      await api.register(service, `${service}-${i}`, port);
    });
    const runs = [
      ['all healthy (baseline), round-robin', `bench-healthy-${fastMs}`, 'round-robin'],
      ['one 10× slower, round-robin', `bench-skewed-${fastMs}`, 'round-robin'],
      ['one 10× slower, least-request', `bench-skewed-${fastMs}`, 'least-request'],
      ['one 10× slower, p2c-ewma', `bench-skewed-${fastMs}`, 'p2c-ewma'],
    ];
    const section =
      `7b. Balancing with one instance 10× slower (${fastMs} vs ${slowMs} ms, 3 instances, ` +
      `${concurrency} concurrent${target ? '' : '; queueing, no target'})`;
    const samples = Object.fromEntries(runs.map(([name]) => [name, []]));
    const toSlow = Object.fromEntries(runs.map(([name]) => [name, 0]));
    const slowOrigin = `http://127.0.0.1:${servers.ports[delays.length - 1]}`;
    const clients = [];
    try {
      for (const [, service, strategy] of runs) {
        const client = await discoveryApp(
          moduleOptions(agent, { register: false, http: { strategy } }),
        );
        clients.push(client);
        const http = client.app.get(DiscoveryHttpClient);
        await latencies(http, `http://${service}/x`, concurrency, { ms: WARM_MS });
      }
      // Rounds, each running every configuration in turn (alternating order), so the machine's
      // drift hits all of them; each configuration's samples pooled.
      for (let round = 0; round < ROUNDS; round++) {
        const order = runs.map((run, i) => [run, clients[i]]);
        for (const [[name, service], client] of round % 2 === 0 ? order : order.reverse()) {
          const http = client.app.get(DiscoveryHttpClient);
          const tap = tapHttpAttempts([slowOrigin]);
          try {
            const url = `http://${service}/x`;
            samples[name].push(...(await latencies(http, url, concurrency, { count: perRound })));
          } finally {
            tap.close();
          }
          toSlow[name] += tap.attempts.length;
        }
      }
    } finally {
      for (const client of clients) await client.close();
    }
    const results = Object.fromEntries(runs.map(([name]) => [name, summarize(samples[name])]));
    const baseline = results[runs[0][0]];
    for (const [name] of runs) {
      const s = results[name];
      const ratio = s.p99 / baseline.p99;
      const p2c = target && name.endsWith('p2c-ewma');
      report.row({
        section,
        name,
        unit: 'ns',
        stats: s,
        note:
          `p99 ${ratio.toFixed(2)}× the baseline's` +
          (name === runs[0][0]
            ? `; p99.9 ${(
                percentile(
                  [...samples[name]].sort((a, b) => a - b),
                  99.9,
                ) / 1e6
              ).toFixed(1)} ms (the ${fastMs} ms instances' own tail)`
            : `; ${((100 * toSlow[name]) / s.n).toFixed(1)}% of requests to the slow one`),
        ...(p2c && { target: { text: `p99 ≤ ${P99_TARGET}× baseline`, met: ratio <= P99_TARGET } }),
      });
    }
    return { results, toSlow };
  } finally {
    await servers.stop();
    await Promise.all(ids.map((id) => api.deregister(id)));
  }
}
