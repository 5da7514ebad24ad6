// 3. Bootstrap cost: create + init of an application context with the module (which registers
// with the agent during bootstrap) vs the same context without it; close timed too.
import process from 'node:process';
import { discoveryApp, moduleOptions, plainApp } from './apps.mjs';
import { summarize } from './stats.mjs';
import { collect } from './measure.mjs';

const SAMPLES = 25;
const WARMUP = 3;
const NAME = 'bench-boot';

export async function bootstrapSection({ agent, api, report }) {
  const options = moduleOptions(agent, { name: NAME, port: 31_003 });
  const samples = { withInit: [], withClose: [], plainInit: [], plainClose: [] };
  const once = async (create, initKey, closeKey, record) => {
    const t0 = process.hrtime.bigint();
    const app = await create();
    const t1 = process.hrtime.bigint();
    if (initKey === 'withInit' && record && samples.withInit.length === 0) {
      // Bootstrap awaited the registration: the instance is passing in Consul already.
      const passing = await api.passing(NAME);
      if (passing.length !== 1) throw new Error(`${NAME} not passing right after init`);
    }
    const t2 = process.hrtime.bigint();
    await app.close();
    const t3 = process.hrtime.bigint();
    if (record) {
      samples[initKey].push(Number(t1 - t0));
      samples[closeKey].push(Number(t3 - t2));
    }
  };
  collect();
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    const record = i >= WARMUP;
    // Alternate which one goes first, so neither always runs on a warmer process.
    const pair = [
      () => once(() => discoveryApp(options), 'withInit', 'withClose', record),
      () => once(() => plainApp(), 'plainInit', 'plainClose', record),
    ];
    if (i % 2) pair.reverse();
    for (const run of pair) await run();
  }
  const gone = await api.passing(NAME);
  if (gone.length !== 0) throw new Error(`${NAME} still registered after close`);

  const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)]));
  const section = '3. Bootstrap cost';
  report.row({
    section,
    name: 'create + init, with DiscoveryModule (registers, TTL passing)',
    unit: 'ns',
    stats: s.withInit,
    ratio: { value: s.withInit.p50 / s.plainInit.p50, label: 'with/without' },
    note: `+${((s.withInit.p50 - s.plainInit.p50) / 1e6).toFixed(2)} ms at p50`,
  });
  report.row({
    section,
    name: 'create + init, without the module',
    unit: 'ns',
    stats: s.plainInit,
  });
  report.row({
    section,
    name: 'close, with DiscoveryModule (deregisters)',
    unit: 'ns',
    stats: s.withClose,
    ratio: { value: s.withClose.p50 / s.plainClose.p50, label: 'with/without' },
  });
  report.row({ section, name: 'close, without the module', unit: 'ns', stats: s.plainClose });
  return s;
}
