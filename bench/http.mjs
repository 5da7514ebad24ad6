// 7. DiscoveryHttpClient's own cost: the same GETs to the same echo servers (three of them, in one
// child process: test/support/fixtures/echo-servers.mjs), direct to a known address vs by service
// name through the client, for fetch, the dispatcher and the axios adapter.
// - sequential: the direct and by-name calls interleaved call by call, so drift hits both;
// - 32 concurrent: requests per second over alternating rounds (direct, by name, direct, …),
//   the median round of each compared. For the dispatcher a third side, a pass-through
//   interceptor composed the same way (undici's compose, no discovery) but written in undici's
//   newer handler API, shows what converting between its two handler APIs costs — the
//   conversions the client's interceptor avoids (lib/http/handler-api.ts).
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
const PER_ROUND = 6_000;
const ROUNDS = 5;
const ADDED_TARGET_NS = 50_000;
const THROUGHPUT_TARGET = 0.95;

/** `count` requests by `width` workers; requests per second. */
async function throughput(call, count, width) {
  let left = count;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (left-- > 0) await call();
    }),
  );
  return count / (Number(process.hrtime.bigint() - t0) / 1e9);
}

const median = (values) => summarize(values).p50;

export async function httpSection({ agent, api, report }) {
  const servers = await startEchoServers(INSTANCES);
  const direct = new Agent();
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
    const section = `7. HTTP client overhead (${INSTANCES} echo servers in a child process; direct = a known address)`;
    const results = {};
    for (const [what, pair] of Object.entries(pairs)) {
      const { composed, ...sides } = pair;
      const sequential = await timeInterleaved(sides, { iterations: SEQUENTIAL, warmup: 300 });
      const s = { direct: summarize(sequential.direct), byName: summarize(sequential.byName) };
      const added = s.byName.mean - s.direct.mean;
      report.row({
        section,
        name: `${what} by name, sequential (direct: p50 ${(s.direct.p50 / 1e3).toFixed(0)} µs)`,
        unit: 'ns',
        stats: s.byName,
        note: `${added >= 0 ? '+' : ''}${(added / 1e3).toFixed(1)} µs mean vs direct`,
        target: { text: '≤ +50 µs mean', met: added <= ADDED_TARGET_NS },
      });
      const order = composed ? ['direct', 'byName', 'composed'] : ['direct', 'byName'];
      const rates = Object.fromEntries(order.map((side) => [side, []]));
      await throughput(pair.byName, 1_000, CONCURRENCY);
      for (let round = 0; round < ROUNDS; round++) {
        for (const side of round % 2 === 0 ? order : [...order].reverse()) {
          collect();
          rates[side].push(await throughput(pair[side], PER_ROUND, CONCURRENCY));
        }
      }
      const ratio = median(rates.byName) / median(rates.direct);
      report.row({
        section,
        name: `${what} by name, ${CONCURRENCY} concurrent`,
        value:
          `${median(rates.byName).toFixed(0)} req/s = ${(ratio * 100).toFixed(1)}% of direct ` +
          `(${median(rates.direct).toFixed(0)} req/s)`,
        target: { text: '≥ 95% of direct', met: ratio >= THROUGHPUT_TARGET },
      });
      if (composed) {
        const share = median(rates.composed) / median(rates.direct);
        report.row({
          section,
          name: `  reference: a pass-through interceptor (newer handler API), ${CONCURRENCY} concurrent`,
          value: `${median(rates.composed).toFixed(0)} req/s = ${(share * 100).toFixed(1)}% of direct`,
        });
      }
      results[what] = { sequential: s, addedMeanNs: added, rates, throughputRatio: ratio };
    }
    return results;
  } finally {
    await client.close();
    await direct.close();
    await passThrough.close();
    await servers.stop();
    await Promise.all(servers.ports.map((_, i) => api.deregister(`${SERVICE}-${i}`)));
  }
}
