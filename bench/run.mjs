// `npm run bench`: starts a Consul dev agent on free loopback ports, runs every section against
// it, prints a table and writes bench/results.json. Needs `node --expose-gc` and a built dist/.
// `npm run bench -- http sharding` runs only the named sections (results.json is then not
// written, so the stored full run stays whole).
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import Consul from 'consul';
import { bootstrapSection } from './bootstrap.mjs';
import { benchApi } from './apps.mjs';
import { latencySection } from './latency.mjs';
import { propagationSection } from './propagation.mjs';
import { scaleSection } from './scale.mjs';
import { shardingSection } from './sharding.mjs';
import { shardingFailoverSection } from './sharding-failover.mjs';
import { httpSection } from './http.mjs';
import { httpBalancingSection } from './http-balancing.mjs';
import { httpFailoverSection } from './http-failover.mjs';
import { formatNs, formatRatio, renderTable } from './stats.mjs';
import { startConsulAgent } from '../.tmp/toolkit/toolkit.js';

const RESULTS = fileURLToPath(new URL('./results.json', import.meta.url));
const only = process.argv.slice(2);

function machine(consulVersion) {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model?.trim() ?? 'unknown',
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    consul: consulVersion,
    loadAverage1m: +os.loadavg()[0].toFixed(2),
    gcExposed: typeof globalThis.gc === 'function',
  };
}

function createReport() {
  const rows = [];
  return {
    rows,
    row: (r) => rows.push(r),
    table() {
      const header = ['Measurement', 'median', 'p99', 'n', 'ratio / value', 'target', 'met?'];
      const lines = [];
      let section;
      const body = [];
      for (const r of rows) {
        if (r.section !== section) {
          section = r.section;
          body.push([`[${section}]`, '', '', '', '', '', '']);
        }
        const ratio = r.ratio ? `${formatRatio(r.ratio.value)} ${r.ratio.label}` : (r.note ?? '');
        const met = r.target ? (r.target.met ? 'yes' : 'NO') : '';
        if (r.unit === 'ns') {
          body.push([
            `  ${r.name}`,
            formatNs(r.stats.p50),
            formatNs(r.stats.p99),
            String(r.stats.n),
            r.ratio && r.note ? `${ratio}; ${r.note}` : ratio,
            r.target?.text ?? '',
            met,
          ]);
        } else {
          body.push([`  ${r.name}`, '', '', '', r.value, r.target?.text ?? '', met]);
        }
      }
      lines.push(renderTable(header, body));
      return lines.join('\n');
    },
  };
}

let agent;
let raw;
let stopping;
async function shutdown() {
  stopping ??= (async () => {
    raw?.destroy();
    await agent?.stop();
  })();
  return stopping;
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    console.error(`\nbench: ${signal}, stopping the Consul agent`);
    void shutdown().finally(() => process.exit(130));
  });
}

async function main() {
  const started = Date.now();
  if (typeof globalThis.gc !== 'function') {
    console.error('bench: run with `node --expose-gc` (npm run bench does) for heap numbers');
  }
  agent = await startConsulAgent({ extraArgs: ['-log-level', 'warn'] });
  const env = machine(await agent.version());
  console.log(
    `Machine: ${env.cpus} CPUs (${env.cpuModel}), ${env.memoryGiB} GiB, ${env.os}; ` +
      `Node ${env.node}; Consul ${env.consul} dev agent on ${agent.baseUrl}; ` +
      `load average ${env.loadAverage1m} at start`,
  );
  const api = benchApi(agent);
  raw = new Consul({ host: agent.bind, port: agent.httpPort });
  const report = createReport();
  const ctx = { agent, api, raw, report };
  const results = { startedAt: new Date(started).toISOString(), machine: env, sections: {} };
  const sections = [
    ['latency', latencySection],
    ['propagation', propagationSection],
    ['bootstrap', bootstrapSection],
    ['scale', scaleSection],
    ['sharding', shardingSection],
    ['shardingFailover', shardingFailoverSection],
    ['http', httpSection],
    ['httpBalancing', httpBalancingSection],
    ['httpFailover', httpFailoverSection],
  ].filter(([key]) => only.length === 0 || only.includes(key));
  if (sections.length === 0) throw new Error(`no section named ${only.join(', ')}`);
  let failed = false;
  for (const [key, run] of sections) {
    const t0 = Date.now();
    process.stdout.write(`… ${key}`);
    try {
      results.sections[key] = await run(ctx);
      process.stdout.write(` (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
    } catch (error) {
      failed = true;
      process.stdout.write(' FAILED\n');
      console.error(error);
      results.sections[key] = { error: String(error?.stack ?? error) };
    }
  }
  results.rows = report.rows;
  results.totalSeconds = +((Date.now() - started) / 1000).toFixed(1);
  console.log(`\n${report.table()}\n`);
  console.log(
    `Total ${results.totalSeconds} s. Durations: median = p50, p99 by nearest rank. ` +
      'Ratios compare medians.',
  );
  if (only.length > 0) return;
  writeFileSync(RESULTS, `${JSON.stringify(results, bigintSafe, 2)}\n`);
  console.log(`Wrote ${RESULTS}`);
  if (failed) process.exitCode = 1;
}

function bigintSafe(_key, value) {
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof Float64Array) return Array.from(value);
  if (value instanceof Set) return [...value];
  return value;
}

try {
  await main();
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await shutdown();
  // Everything is closed now, so the process should end on its own. If a handle still holds it,
  // say which (this timer is unref'd: it only fires when something else keeps the process up).
  setTimeout(() => {
    console.error(
      'bench: still running 5 s after cleanup; open:',
      process.getActiveResourcesInfo(),
    );
    process.exit(process.exitCode || 1);
  }, 5_000).unref();
}
