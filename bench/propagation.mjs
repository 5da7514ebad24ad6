// 2. Propagation: from a change made through the raw HTTP API to discover() / watch() seeing it,
// next to a naive loop that calls the raw client's health.service every 1000 ms.
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '../.tmp/toolkit/toolkit.js';
import { discoveryApp, moduleOptions, watchReady } from './apps.mjs';
import { summarize } from './stats.mjs';
import { nextTurn } from './measure.mjs';

const REG = 'bench-prop-reg';
const CHK = 'bench-prop-chk';
const SAMPLES = 100;
const WARMUP = 3;
const POLL_EVERY_MS = 1_000;
const EVENT_TIMEOUT_MS = 5_000;

/** The 1 s poll loop: every response logged with when it was sent and received. */
function startPoller(raw, name) {
  const log = [];
  let stopped = false;
  let errors = 0;
  let wake;
  const done = (async () => {
    await sleep(Math.random() * POLL_EVERY_MS); // random phase
    while (!stopped) {
      const sent = process.hrtime.bigint();
      try {
        const entries = await raw.health.service({ service: name, passing: true });
        log.push({
          sent,
          recv: process.hrtime.bigint(),
          ids: new Set(entries.map((e) => e.Service.ID)),
        });
      } catch {
        errors++;
      }
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, POLL_EVERY_MS);
      });
    }
  })();
  return {
    log,
    get errors() {
      return errors;
    },
    stop: () => {
      stopped = true;
      wake?.();
      return done;
    },
  };
}

/**
 * Reference: a bare blocking query on /v1/health/service/<name>?passing with fetch, i.e. how soon
 * Consul itself answers a long-poll after the change (no library in between).
 */
function startBlockingQuery(baseUrl, name) {
  const log = [];
  const abort = new AbortController();
  const done = (async () => {
    let index = 0;
    while (!abort.signal.aborted) {
      try {
        const wait = index > 0 ? `&index=${index}&wait=60s` : '';
        const res = await fetch(`${baseUrl}/v1/health/service/${name}?passing${wait}`, {
          signal: abort.signal,
        });
        const entries = await res.json();
        const recv = process.hrtime.bigint();
        const next = Number(res.headers.get('x-consul-index'));
        index = next < index ? 0 : Math.max(next, 1);
        log.push({ recv, ids: new Set(entries.map((e) => e.Service.ID)) });
      } catch {
        if (!abort.signal.aborted) await sleep(100);
      }
    }
  })();
  return {
    log,
    stop: () => {
      abort.abort();
      return done;
    },
  };
}

export async function propagationSection({ agent, api, raw, report }) {
  const chkIds = Array.from({ length: WARMUP + SAMPLES }, (_, i) => `${CHK}-${i}`);
  await api.register(REG, `${REG}-base`, 21_000);
  await api.register(CHK, `${CHK}-base`, 22_000);
  await api.inBatches(chkIds, 25, (id, i) => api.register(CHK, id, 22_001 + i));

  const app = await discoveryApp(moduleOptions(agent, { name: 'bench-prop-self', port: 31_002 }));
  const pollers = [];
  const stoppers = [];
  const subscriptions = [];
  try {
    const svc = app.service;
    let pending; // the event being measured
    const onEmit = (name) => (set) => {
      const p = pending;
      if (!p || p.name !== name || p.watchAt !== undefined) return;
      if (p.visible(set)) p.watchAt = process.hrtime.bigint();
    };
    subscriptions.push(await watchReady(svc, REG, undefined, onEmit(REG)));
    subscriptions.push(await watchReady(svc, CHK, undefined, onEmit(CHK)));
    await waitFor(() => svc.snapshot(CHK)?.length === chkIds.length + 1, {
      timeoutMs: 10_000,
      intervalMs: 10,
      message: `${CHK} fully passing in the watch`,
    });

    pollers.push({ name: REG, ...startPoller(raw, REG) });
    pollers.push({ name: CHK, ...startPoller(raw, CHK) });
    const blocking = [REG, CHK].map((name) => ({
      name,
      ...startBlockingQuery(agent.baseUrl, name),
    }));
    stoppers.push(...blocking.map((b) => b.stop));
    await waitFor(() => blocking.every((b) => b.log.length > 0), {
      timeoutMs: 10_000,
      intervalMs: 10,
      message: 'reference long-polls',
    });

    const events = [];
    const measure = async (kind, name, id, change, visible) => {
      await sleep(80 + Math.random() * 80); // random phase against the 1 s poller; refills the rate limit
      const event = {
        kind,
        name,
        id,
        visible,
        t0: 0n,
        putDoneAt: 0n,
        watchAt: undefined,
        discoverAt: undefined,
      };
      pending = event;
      // discover() on every event-loop turn (setImmediate) until the change is visible.
      let cancelled = false;
      const spin = (async () => {
        const deadline = Date.now() + EVENT_TIMEOUT_MS;
        while (!cancelled && Date.now() < deadline) {
          await nextTurn();
          if (event.t0 === 0n) continue;
          if (visible(await svc.discover(name))) {
            event.discoverAt = process.hrtime.bigint();
            return;
          }
        }
      })();
      try {
        event.t0 = process.hrtime.bigint();
        await change();
        event.putDoneAt = process.hrtime.bigint();
        await spin;
        await waitFor(() => event.watchAt !== undefined, {
          timeoutMs: EVENT_TIMEOUT_MS,
          intervalMs: 10,
          message: `watch(${name}) to emit the ${kind} of ${id}`,
        });
      } finally {
        cancelled = true;
        await spin.catch(() => undefined);
      }
      if (event.discoverAt === undefined)
        throw new Error(`discover(${name}) never showed the ${kind} of ${id}`);
      pending = undefined;
      events.push(event);
    };

    for (let i = 0; i < WARMUP + SAMPLES; i++) {
      const id = `${REG}-${i}`;
      await measure(
        'registration',
        REG,
        id,
        () => api.register(REG, id, 21_001 + i),
        (set) => set.some((x) => x.serviceId === id),
      );
    }
    for (const id of chkIds) {
      await measure(
        'check → critical',
        CHK,
        id,
        () => api.failTtl(id),
        (set) => set.every((x) => x.serviceId !== id),
      );
    }
    // Let each poller see the last change at least once more.
    await sleep(POLL_EVERY_MS * 1.3);
    await Promise.all(pollers.map((p) => p.stop()));
    await Promise.all(stoppers.map((stop) => stop()));

    const measured = events.filter((_, i) => i % (WARMUP + SAMPLES) >= WARMUP);
    const result = {};
    const section = '2. Propagation (change via HTTP API → visible)';
    for (const kind of ['registration', 'check → critical']) {
      const of = measured.filter((e) => e.kind === kind);
      const poller = pollers.find((p) => p.name === of[0].name);
      const pollDelays = [];
      for (const e of of) {
        const seen = poller.log.find(
          (r) => r.sent >= e.t0 && e.visible([...r.ids].map((serviceId) => ({ serviceId }))),
        );
        if (seen) pollDelays.push(Number(seen.recv - e.t0));
      }
      const reference = blocking.find((b) => b.name === of[0].name);
      const blockingDelays = [];
      for (const e of of) {
        const seen = reference.log.find(
          (r) => r.recv >= e.t0 && e.visible([...r.ids].map((serviceId) => ({ serviceId }))),
        );
        if (seen) blockingDelays.push(Number(seen.recv - e.t0));
      }
      const ms = (xs) => xs.map((x) => +(x / 1e6).toFixed(3));
      const samples = {
        discover: of.map((e) => Number(e.discoverAt - e.t0)),
        watch: of.map((e) => Number(e.watchAt - e.t0)),
        put: of.map((e) => Number(e.putDoneAt - e.t0)),
        blocking: blockingDelays,
        poll: pollDelays,
      };
      const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)]));
      result[kind] = {
        ...s,
        samplesMs: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, ms(v)])),
      };
      const target = (st) => ({
        text: 'p50 ≤ 10 ms, p99 ≤ 50 ms',
        met: st.p50 <= 10e6 && st.p99 <= 50e6,
      });
      report.row({
        section,
        name: `${kind}: visible in discover() (polled every loop turn)`,
        unit: 'ns',
        stats: s.discover,
        target: target(s.discover),
      });
      report.row({
        section,
        name: `${kind}: emitted by watch()`,
        unit: 'ns',
        stats: s.watch,
        target: target(s.watch),
      });
      report.row({
        section,
        name: `${kind}: 1 s poll loop (raw client health.service)`,
        unit: 'ns',
        stats: s.poll,
        ratio: { value: s.poll.p50 / s.watch.p50, label: 'poll/watch' },
      });
      report.row({
        section,
        name: `${kind}: reference: bare blocking query (fetch, no library)`,
        unit: 'ns',
        stats: s.blocking,
      });
      report.row({
        section,
        name: `${kind}: reference: the HTTP PUT making the change`,
        unit: 'ns',
        stats: s.put,
      });
    }
    return result;
  } finally {
    for (const s of subscriptions) s.unsubscribe();
    await Promise.all(pollers.map((p) => p.stop()));
    await Promise.all(stoppers.map((stop) => stop()));
    await app.close();
  }
}
