// 1. discover() latency: watched (memory) vs unwatched (direct query) vs the raw consul client.
import { discoveryApp, moduleOptions, watchReady } from './apps.mjs';
import { summarize } from './stats.mjs';
import { timeBatches, timeEach, timeInterleaved } from './measure.mjs';

const NAME = 'bench-lat';
const INSTANCES = 5;

export async function latencySection({ agent, api, raw, report }) {
  const ids = Array.from({ length: INSTANCES }, (_, i) => `${NAME}-${i}`);
  await api.inBatches(ids, INSTANCES, (id, i) => api.register(NAME, id, 20_001 + i));

  const watched = await discoveryApp(
    moduleOptions(agent, { name: 'bench-lat-self', port: 31_001 }),
  );
  // A second app that never watches NAME: every discover() is a query to the agent.
  const direct = await discoveryApp(moduleOptions(agent, { register: false }));
  try {
    const subscription = await watchReady(watched.service, NAME);
    const check = async (what, fn) => {
      const n = (await fn()).length;
      if (n !== INSTANCES)
        throw new Error(`${what} returned ${n} instances, expected ${INSTANCES}`);
    };
    await check('watched discover()', () => watched.service.discover(NAME));
    await check('direct discover()', () => direct.service.discover(NAME));
    await check('raw health.service', () => raw.health.service({ service: NAME, passing: true }));
    if (watched.service.snapshot(NAME) === undefined) throw new Error('NAME is not watched');
    if (direct.service.snapshot(NAME) !== undefined) throw new Error('direct app watches NAME');

    const memoryCall = () => watched.service.discover(NAME);
    const batched = await timeBatches(memoryCall, {
      batches: 1_000,
      batchSize: 100,
      warmup: 20_000,
    });
    const single = await timeEach(memoryCall, { iterations: 20_000, warmup: 2_000 });
    const snapshot = await timeBatches(() => watched.service.snapshot(NAME), {
      batches: 1_000,
      batchSize: 100,
      warmup: 20_000,
    });
    const network = await timeInterleaved(
      {
        direct: () => direct.service.discover(NAME),
        raw: () => raw.health.service({ service: NAME, passing: true }),
      },
      { iterations: 2_000, warmup: 200 },
    );
    subscription.unsubscribe();

    const s = {
      batched: summarize(batched),
      single: summarize(single),
      snapshot: summarize(snapshot),
      direct: summarize(network.direct),
      raw: summarize(network.raw),
    };
    const section = `1. discover() latency (${INSTANCES} instances)`;
    for (const [how, stats] of [
      ['per call from batches of 100 (100k calls)', s.batched],
      ['each call timed (20k calls)', s.single],
    ]) {
      report.row({
        section,
        name: `watched discover(), memory — ${how}`,
        unit: 'ns',
        stats,
        ratio: { value: s.direct.p50 / stats.p50, label: 'direct/watched' },
        target: {
          text: 'p50 ≤ 2 µs, ≥ 300× direct',
          met: stats.p50 <= 2_000 && s.direct.p50 / stats.p50 >= 300,
        },
      });
    }
    report.row({
      section,
      name: 'watched snapshot() (sync) — per call from batches of 100',
      unit: 'ns',
      stats: s.snapshot,
      ratio: { value: s.direct.p50 / s.snapshot.p50, label: 'direct/snapshot' },
    });
    report.row({
      section,
      name: 'unwatched discover(), direct query (2,000, interleaved with raw)',
      unit: 'ns',
      stats: s.direct,
      ratio: { value: s.direct.p50 / s.raw.p50, label: 'direct/raw' },
    });
    report.row({
      section,
      name: 'raw consul client health.service({ passing: true }) (2,000)',
      unit: 'ns',
      stats: s.raw,
    });
    return s;
  } finally {
    await watched.close();
    await direct.close();
  }
}
