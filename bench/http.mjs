// 7. DiscoveryHttpClient's own cost: the same GETs to the same echo servers (three of them, in one
// child process: test/support/fixtures/echo-servers.mjs), direct to a known address (a plain
// undici Agent) vs by service name through the client, for fetch, the dispatcher and the axios
// adapter.
// - sequential: the direct and by-name calls interleaved call by call, so drift hits both;
// - overhead, measured soundly (README "The HTTP client"): the client process's CPU per request
//   (process.cpuUsage(), user + system) in steady state — every side warmed first, then ROUNDS
//   rounds of PER_ROUND requests per side at 32 concurrent, each round run as slices of SLICE
//   requests taking turns between the sides (order alternating), so that the machine's drift,
//   which moves CPU per request by ±30% within seconds here, hits every side alike; the median
//   of the per-round differences (by name − direct) with its spread (min–max over the rounds),
//   and the median of the per-round throughput ratios; no collection is forced inside the rounds
//   (warm() says why). This process runs on CPU 0 and the echo servers and the agent on the
//   others (measure.mjs pinApart), when the machine allows. For fetch and the dispatcher a second
//   plain Agent (A/A: what the method reports when there is no difference); for the dispatcher a
//   pass-through interceptor composed with undici's compose() on a plain Agent, which tells
//   whether compose() itself is a cost (the client's dispatcher is a Dispatcher subclass, no
//   compose()); and the dispatcher's own code with the network taken out (ownCode below).
import axios from 'axios';
import { Agent, Dispatcher, fetch as undiciFetch } from 'undici';
import { startEchoServers } from '../.tmp/toolkit/toolkit.js';
import { DiscoveryHttpClient } from '../dist/index.js';
import { discoveryApp, moduleOptions } from './apps.mjs';
import { collect, pinApart, timeInterleaved } from './measure.mjs';
import { summarize } from './stats.mjs';

const SERVICE = 'bench-http';
const INSTANCES = 3;
const SEQUENTIAL = 3_000;
const CONCURRENCY = 32;
const PER_ROUND = 20_000;
const ROUNDS = 20;
const SLICE = 1_000;
const WARMUP = 5_000;
const ADDED_TARGET_NS = 50_000;
const CPU_TARGET_US = 1.5;
const THROUGHPUT_TARGET = 0.95;

/**
 * `count` requests by `width` workers: the seconds they took and the client process's CPU (user +
 * system) they used, in µs.
 */
async function measureSlice(call, count, width) {
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
  return { seconds, cpuUs: cpu.user + cpu.system };
}

/**
 * One round: PER_ROUND requests per side, as slices of SLICE taking turns (the order alternating
 * slice by slice); per side, requests per second and CPU per request over its slices.
 */
async function slicedRound(pair, order, round) {
  const totals = Object.fromEntries(order.map((side) => [side, { seconds: 0, cpuUs: 0 }]));
  for (let slice = 0; slice < PER_ROUND / SLICE; slice++) {
    for (const side of (round + slice) % 2 === 0 ? order : [...order].reverse()) {
      const { seconds, cpuUs } = await measureSlice(pair[side], SLICE, CONCURRENCY);
      totals[side].seconds += seconds;
      totals[side].cpuUs += cpuUs;
    }
  }
  return Object.fromEntries(
    order.map((side) => [
      side,
      { rate: PER_ROUND / totals[side].seconds, cpuUs: totals[side].cpuUs / PER_ROUND },
    ]),
  );
}

/**
 * Every side of `pair` warmed with WARMUP requests, after a full collection — the only one forced:
 * one inside the rounds discards optimized code that holds objects that died (V8's "weak
 * objects" deoptimizations), and the side with more code to optimize again pays for it (README
 * "The HTTP client": ~+1.4 µs on the by-name side).
 */
async function warm(pair) {
  collect();
  for (const side of Object.keys(pair)) await measureSlice(pair[side], WARMUP, CONCURRENCY);
}

/** ROUNDS sliced rounds of the sides in `order`. */
async function slicedRounds(pair, order) {
  const rounds = [];
  for (let round = 0; round < ROUNDS; round++) rounds.push(await slicedRound(pair, order, round));
  return rounds;
}

const median = (values) => summarize(values).p50;
/** `value` with `digits` decimals and its sign (+1.20, -0.45). */
const signed = (value, digits) => `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`;
const spread = (values) => `${Math.min(...values).toFixed(2)} to ${Math.max(...values).toFixed(2)}`;

/** The sides of each pair, over one set of clients (fresh for each pair: see httpSection). */
function pairSides(what, { direct, twin, passThrough, http, known }) {
  const expectOk = (text) => {
    if (text !== 'ok') throw new Error(`unexpected answer ${text}`);
  };
  const get = (dispatcher, origin) =>
    dispatcher
      .request({ origin, path: '/x', method: 'GET' })
      .then((r) => r.body.text())
      .then(expectOk);
  switch (what) {
    case 'fetch': {
      const fetchVia = (dispatcher) =>
        undiciFetch(`${known()}/x`, { dispatcher })
          .then((r) => r.text())
          .then(expectOk);
      return {
        direct: () => fetchVia(direct),
        byName: () =>
          http
            .fetch(`http://${SERVICE}/x`)
            .then((r) => r.text())
            .then(expectOk),
        twin: () => fetchVia(twin),
      };
    }
    case 'dispatcher':
      return {
        direct: () => get(direct, known()),
        byName: () => get(http.dispatcher, `http://${SERVICE}`),
        twin: () => get(twin, known()),
        composed: () => get(passThrough, known()),
      };
    default: {
      const axiosDirect = axios.create({ responseType: 'text' });
      const axiosByName = axios.create({ responseType: 'text', adapter: http.axiosAdapter() });
      return {
        direct: () => axiosDirect.get(`${known()}/x`).then((r) => expectOk(r.data)),
        byName: () => axiosByName.get(`http://${SERVICE}/x`).then((r) => expectOk(r.data)),
      };
    }
  }
}

export async function httpSection({ agent, api, report }) {
  const servers = await startEchoServers(INSTANCES);
  let pinning = { pinned: false, restore: () => undefined };
  let own;
  try {
    await api.inBatches(servers.ports, INSTANCES, (port, i) =>
      api.register(SERVICE, `${SERVICE}-${i}`, port),
    );
    pinning = pinApart([servers.pid, agent.pid]);
    let turn = 0;
    const known = () => `http://127.0.0.1:${servers.ports[turn++ % INSTANCES]}`;
    const section =
      `7. HTTP client overhead (${INSTANCES} echo servers in a child process; direct = a plain ` +
      `Agent to a known address; ${pinning.pinned ? 'client on CPU 0, servers and agent on the others' : 'not pinned'})`;
    const results = {};
    // Its own client, kept open: the same code measured before the pairs and after them.
    own = await discoveryApp(moduleOptions(agent, { register: false }));
    const ownHttp = own.app.get(DiscoveryHttpClient);
    await ownHttp.fetch(`http://${SERVICE}/x`).then((r) => r.text());
    results.ownCodeFirst = await ownCode(report, section, ownHttp, known, 'before the pairs ran');
    for (const what of ['fetch', 'dispatcher', 'axios adapter']) {
      // Every client fresh for each pair: no side inherits pools or state an earlier pair left.
      const direct = new Agent();
      // The same requests through a second plain Agent: what the method reports for no difference.
      const twin = new Agent();
      // undici's compose() around a plain Agent with an interceptor that does nothing.
      const passThrough = new Agent().compose(
        (dispatch) => (opts, handler) => dispatch(opts, handler),
      );
      const client = await discoveryApp(moduleOptions(agent, { register: false }));
      try {
        const http = client.app.get(DiscoveryHttpClient);
        results[what] = await measurePair(
          report,
          section,
          what,
          pairSides(what, { direct, twin, passThrough, http, known }),
        );
      } finally {
        await client.close();
        await Promise.all([direct.close(), twin.close(), passThrough.close()]);
      }
    }
    results.ownCodeAfter = await ownCode(report, section, ownHttp, known, 'after the pairs ran');
    return { pinned: pinning.pinned, ...results };
  } finally {
    await own?.close();
    pinning.restore();
    await servers.stop();
    await Promise.all(servers.ports.map((_, i) => api.deregister(`${SERVICE}-${i}`)));
  }
}

/** Sequential and concurrent measurements of one pair and its references (A/A, compose()). */
async function measurePair(report, section, what, pair) {
  const { composed, twin } = pair;
  const sides = { direct: pair.direct, byName: pair.byName };
  const sequential = await timeInterleaved(sides, { iterations: SEQUENTIAL, warmup: 300 });
  const s = { direct: summarize(sequential.direct), byName: summarize(sequential.byName) };
  const addedLatency = s.byName.mean - s.direct.mean;
  report.row({
    section,
    name: `${what} by name, sequential (direct: p50 ${(s.direct.p50 / 1e3).toFixed(0)} µs)`,
    unit: 'ns',
    stats: s.byName,
    note: `${signed(addedLatency / 1e3, 1)} µs mean vs direct`,
    target: { text: '≤ +50 µs mean', met: addedLatency <= ADDED_TARGET_NS },
  });
  // The A/A side runs in the same rounds; the compose() reference in rounds of its own after
  // them: next to its slices, a side read up to +1.8 µs (the A/A side did, with no difference).
  const order = twin ? ['direct', 'byName', 'twin'] : ['direct', 'byName'];
  await warm(pair);
  const rounds = await slicedRounds(pair, order);
  const composedRounds = composed ? await slicedRounds(pair, ['direct', 'composed']) : [];
  const cpuDiff = (side, of = rounds) => of.map((r) => r[side].cpuUs - r.direct.cpuUs);
  const rateRatio = (side, of = rounds) => of.map((r) => r[side].rate / r.direct.rate);
  const directCpu = median(rounds.map((r) => r.direct.cpuUs));
  const added = median(cpuDiff('byName'));
  const ratio = median(rateRatio('byName'));
  report.row({
    section,
    name: `${what} by name, client CPU per request, ${CONCURRENCY} concurrent`,
    value:
      `${signed(added, 2)} µs vs direct (${directCpu.toFixed(1)} µs); ` +
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
  if (twin) {
    report.row({
      section,
      name: `  reference: a second plain Agent, the same requests (A/A: the method's noise)`,
      value:
        `${median(cpuDiff('twin')).toFixed(2)} µs CPU per request vs direct ` +
        `(${spread(cpuDiff('twin'))}); ${(median(rateRatio('twin')) * 100).toFixed(1)}% of direct throughput`,
    });
  }
  if (composed) {
    report.row({
      section,
      name: `  reference: a pass-through compose() interceptor on a plain Agent`,
      value:
        `${median(cpuDiff('composed', composedRounds)).toFixed(2)} µs CPU per request vs direct ` +
        `(${spread(cpuDiff('composed', composedRounds))}); ` +
        `${(median(rateRatio('composed', composedRounds)) * 100).toFixed(1)}% of direct throughput ` +
        `(rounds of its own)`,
    });
  }
  return {
    sequential: s,
    addedLatencyMeanNs: addedLatency,
    rounds,
    composedRounds,
    addedCpuUs: added,
    throughputRatio: ratio,
  };
}

const STUB_HEADERS = [Buffer.from('content-length'), Buffer.from('2')];
const STUB_BODY = Buffer.from('ok');

/** Answers every request on a microtask with 200 "ok": no socket, no parser, no server. */
class StubAgent extends Dispatcher {
  dispatch(opts, handler) {
    queueMicrotask(() => {
      handler.onConnect(() => undefined);
      handler.onHeaders(200, STUB_HEADERS, () => undefined, 'OK');
      handler.onData(STUB_BODY);
      handler.onComplete([]);
    });
    return true;
  }
}

/** One request through `dispatcher` with a handler that does nothing but settle. */
function stubCall(dispatcher, origin) {
  return new Promise((resolve, reject) => {
    dispatcher.dispatch(
      { origin, path: '/x', method: 'GET' },
      {
        onConnect: () => undefined,
        onHeaders: () => true,
        onData: () => true,
        onComplete: resolve,
        onError: reject,
      },
    );
  });
}

/**
 * The dispatcher's own code with the network taken out: the client's dispatcher class over a
 * stub agent (the same parts: watch, balancer, ejection) vs the stub alone, in the same sliced
 * rounds. Run before the pairs and after them (README section 7: it costs a little more after
 * them; with a forced collection in every round it cost several times more).
 */
async function ownCode(report, section, http, known, when) {
  const stub = new StubAgent();
  // Internal: the dispatcher's class and its parts (lib/http/discovery.dispatcher.ts).
  const overStub = new http.dispatcher.constructor(stub, http.dispatcher.parts);
  const pair = {
    direct: () => stubCall(stub, known()),
    byName: () => stubCall(overStub, `http://${SERVICE}`),
  };
  await warm(pair);
  const rounds = await slicedRounds(pair, ['direct', 'byName']);
  const diffNs = rounds.map((r) => (r.byName.cpuUs - r.direct.cpuUs) * 1e3);
  const stubNs = median(rounds.map((r) => r.direct.cpuUs * 1e3));
  report.row({
    section,
    name: `  reference: the dispatcher over a stub agent, no network, ${when}`,
    value:
      `${signed(median(diffNs), 0)} ns CPU per call vs the stub alone (${stubNs.toFixed(0)} ns); ` +
      `per-round ${spread(diffNs)} ns`,
  });
  return { addedNs: median(diffNs), stubNs, rounds };
}
