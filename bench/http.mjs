// 7. DiscoveryHttpClient's own cost: the same GETs to the same echo servers (three of them, in one
// child process: test/support/fixtures/echo-servers.mjs), direct to a known address (a plain
// undici Agent) vs by service name through the client, for fetch, the dispatcher and the axios
// adapter.
// - sequential: the direct and by-name calls interleaved call by call, so drift hits both;
// - overhead, measured soundly (README "The HTTP client"): the client process's CPU per request
//   (process.cpuUsage(), user + system) in steady state — every side warmed first, then ROUNDS
//   interleaved rounds (order alternating) of PER_ROUND requests at 32 concurrent; the median of
//   the per-round differences (by name − direct) with its spread (min–max over the rounds), and
//   the median of the per-round throughput ratios. For the dispatcher two more sides: a second
//   plain Agent (A/A: what the method reports when there is no difference), and a pass-through
//   interceptor composed with undici's compose() on a plain Agent, which tells whether compose()
//   itself is a cost (the client's dispatcher is a Dispatcher subclass, no compose()).
import axios from 'axios';
import { Agent, fetch as undiciFetch } from 'undici';
import { startEchoServers } from '../.tmp/toolkit/toolkit.js';
import { DiscoveryHttpClient } from '../dist/index.js';
import { discoveryApp, moduleOptions } from './apps.mjs';
import { collect, timeInterleaved } from './measure.mjs';
import { summarize } from './stats.mjs';

const SERVICE = 'bench-http';
const INSTANCES = 3;
const SEQUENTIAL = 3_000;
const CONCURRENCY = 32;
const PER_ROUND = 20_000;
const ROUNDS = 20;
const WARMUP = 5_000;
const ADDED_TARGET_NS = 50_000;
const CPU_TARGET_US = 1.5;
const THROUGHPUT_TARGET = 0.95;

/**
 * `count` requests by `width` workers: requests per second, and the client process's CPU
 * (user + system) per request in µs.
 */
async function measureRound(call, count, width) {
  let left = count;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (left-- > 0) await call();
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { rate: count / seconds, cpuUs: (cpu.user + cpu.system) / count };
}

const median = (values) => summarize(values).p50;
const spread = (values) => `${Math.min(...values).toFixed(2)} to ${Math.max(...values).toFixed(2)}`;

export async function httpSection({ agent, api, report }) {
  const servers = await startEchoServers(INSTANCES);
  const direct = new Agent();
  // The same requests through a second plain Agent: what the method reports for no difference.
  const twin = new Agent();
  // undici's compose() around a plain Agent with an interceptor that does nothing.
  const passThrough = new Agent().compose((dispatch) => (opts, handler) => dispatch(opts, handler));
  const client = await discoveryApp(moduleOptions(agent, { register: false }));
  try {
    await api.inBatches(servers.ports, INSTANCES, (port, i) =>
      api.register(SERVICE, `${SERVICE}-${i}`, port),
    );
    const http = client.app.get(DiscoveryHttpClient);
    const axiosDirect = axios.create({ responseType: 'text' });
    const axiosByName = axios.create({ responseType: 'text', adapter: http.axiosAdapter() });
    let turn = 0;
    const known = () => `http://127.0.0.1:${servers.ports[turn++ % INSTANCES]}`;
    const expectOk = (text) => {
      if (text !== 'ok') throw new Error(`unexpected answer ${text}`);
    };
    const pairs = {
      fetch: {
        direct: () =>
          undiciFetch(`${known()}/x`, { dispatcher: direct })
            .then((r) => r.text())
            .then(expectOk),
        byName: () =>
          http
            .fetch(`http://${SERVICE}/x`)
            .then((r) => r.text())
            .then(expectOk),
      },
      dispatcher: {
        direct: () =>
          direct
            .request({ origin: known(), path: '/x', method: 'GET' })
            .then((r) => r.body.text())
            .then(expectOk),
        byName: () =>
          http.dispatcher
            .request({ origin: `http://${SERVICE}`, path: '/x', method: 'GET' })
            .then((r) => r.body.text())
            .then(expectOk),
        twin: () =>
          twin
            .request({ origin: known(), path: '/x', method: 'GET' })
            .then((r) => r.body.text())
            .then(expectOk),
        composed: () =>
          passThrough
            .request({ origin: known(), path: '/x', method: 'GET' })
            .then((r) => r.body.text())
            .then(expectOk),
      },
      'axios adapter': {
        direct: () => axiosDirect.get(`${known()}/x`).then((r) => expectOk(r.data)),
        byName: () => axiosByName.get(`http://${SERVICE}/x`).then((r) => expectOk(r.data)),
      },
    };
    const section = `7. HTTP client overhead (${INSTANCES} echo servers in a child process; direct = a plain Agent to a known address)`;
    const results = {};
    for (const [what, pair] of Object.entries(pairs)) {
      const { composed } = pair;
      const sides = { direct: pair.direct, byName: pair.byName };
      const sequential = await timeInterleaved(sides, { iterations: SEQUENTIAL, warmup: 300 });
      const s = { direct: summarize(sequential.direct), byName: summarize(sequential.byName) };
      const addedLatency = s.byName.mean - s.direct.mean;
      report.row({
        section,
        name: `${what} by name, sequential (direct: p50 ${(s.direct.p50 / 1e3).toFixed(0)} µs)`,
        unit: 'ns',
        stats: s.byName,
        note: `${addedLatency >= 0 ? '+' : ''}${(addedLatency / 1e3).toFixed(1)} µs mean vs direct`,
        target: { text: '≤ +50 µs mean', met: addedLatency <= ADDED_TARGET_NS },
      });
      const order = composed ? ['direct', 'byName', 'twin', 'composed'] : ['direct', 'byName'];
      for (const side of order) await measureRound(pair[side], WARMUP, CONCURRENCY);
      const rounds = [];
      for (let round = 0; round < ROUNDS; round++) {
        const measured = {};
        for (const side of round % 2 === 0 ? order : [...order].reverse()) {
          collect();
          measured[side] = await measureRound(pair[side], PER_ROUND, CONCURRENCY);
        }
        rounds.push(measured);
      }
      const cpuDiff = (side) => rounds.map((r) => r[side].cpuUs - r.direct.cpuUs);
      const rateRatio = (side) => rounds.map((r) => r[side].rate / r.direct.rate);
      const directCpu = median(rounds.map((r) => r.direct.cpuUs));
      const added = median(cpuDiff('byName'));
      const ratio = median(rateRatio('byName'));
      report.row({
        section,
        name: `${what} by name, client CPU per request, ${CONCURRENCY} concurrent`,
        value:
          `${added >= 0 ? '+' : ''}${added.toFixed(2)} µs vs direct (${directCpu.toFixed(1)} µs); ` +
          `per-round differences ${spread(cpuDiff('byName'))} µs over ${ROUNDS} rounds of ${PER_ROUND}`,
        target: { text: `≤ +${CPU_TARGET_US} µs`, met: added <= CPU_TARGET_US },
      });
      report.row({
        section,
        name: `${what} by name, throughput, ${CONCURRENCY} concurrent`,
        value:
          `${(ratio * 100).toFixed(1)}% of direct (per-round ${spread(rateRatio('byName').map((r) => r * 100))}%; ` +
          `direct ${median(rounds.map((r) => r.direct.rate)).toFixed(0)} req/s)`,
        target: { text: '≥ 95% of direct', met: ratio >= THROUGHPUT_TARGET },
      });
      if (composed) {
        report.row({
          section,
          name: `  reference: a second plain Agent, the same requests (A/A: the method's noise)`,
          value:
            `${median(cpuDiff('twin')).toFixed(2)} µs CPU per request vs direct ` +
            `(${spread(cpuDiff('twin'))}); ${(median(rateRatio('twin')) * 100).toFixed(1)}% of direct throughput`,
        });
        report.row({
          section,
          name: `  reference: a pass-through compose() interceptor on a plain Agent`,
          value:
            `${median(cpuDiff('composed')).toFixed(2)} µs CPU per request vs direct ` +
            `(${spread(cpuDiff('composed'))}); ${(median(rateRatio('composed')) * 100).toFixed(1)}% of direct throughput`,
        });
      }
      results[what] = {
        sequential: s,
        addedLatencyMeanNs: addedLatency,
        rounds,
        addedCpuUs: added,
        throughputRatio: ratio,
      };
    }
    return results;
  } finally {
    await client.close();
    await direct.close();
    await passThrough.close();
    await twin.close();
    await servers.stop();
    await Promise.all(servers.ports.map((_, i) => api.deregister(`${SERVICE}-${i}`)));
  }
}
