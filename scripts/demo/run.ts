/**
 * `npm run demo`: three instances of an example service register in Consul and share 32
 * partitions (exclusive mode: a Consul lock per partition, with fencing tokens); a directory app
 * discovers them; one instance leaves with SIGTERM, one crashes (SIGKILL) and a fourth joins,
 * and after each the live table shows who owns what, what moved and how long the handoff took.
 * Last act (exclusive mode): a @ClusterCron job every second on three instances, its owner
 * SIGKILLed: one run per second, the late catch-up run and the new owner's higher token.
 * Then everything the demo started is stopped again. Uses the agent at CONSUL_HTTP_ADDR when one
 * answers, else starts a throw-away dev agent on free loopback ports. DEMO_SHARD_MODE=cooperative
 * runs the instances in cooperative mode instead.
 */
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { ServiceInstance } from '@athomic/discovery';

import { DirectoryModule, DirectoryService } from './directory.module.js';
import {
  consulBinary,
  startConsulAgent,
  stopAllAgents,
  type ConsulAgent,
} from '../../test/support/consul-agent.harness.js';
import { freePort } from '../../test/support/ports.harness.js';
import { waitFor } from '../../test/support/wait-for.harness.js';
import { leaderOf, targetFromEnv, waitForLeader, type ConsulTarget } from './support/agent.js';
import {
  describeExit,
  InstanceProcess,
  isJobMessage,
  type JobMessage,
  type ReadyMessage,
} from './support/children.js';
import { getJson, httpRequest } from './support/http.js';
import { DemoLogger } from './support/logger.js';
import { info, step, table, totalSeconds, warn } from './support/output.js';
import { errorMessage, withDeadline } from './support/poll.js';
import { ShardBoard, type Owners } from './support/shards.js';
import { PARTITIONS } from './orders.module.js';

const SERVICE = 'orders';
const ZONES = ['a', 'b', 'c'];
const logger = new DemoLogger((line) => info(`│ directory: ${line}`));
const board = new ShardBoard(PARTITIONS);
/** The lock keys of exclusive mode (`sharding.lock.prefix` default + the service name). */
const LOCK_PREFIX = `athomic/sharding/${SERVICE}/`;
/** Instances the demo crashed: still registered (critical) until the demo deregisters them. */
const crashed: string[] = [];
/** What a crash waits for in the instances' mode (orders.module.ts). */
const crashBound =
  process.env.DEMO_SHARD_MODE === 'cooperative' ? 'TTL 3 s + settle' : 'TTL 3 s + lock-delay 1 s';

/** Everything the demo started, so that any failure can still stop it. */
const started: {
  /** The dev agent the demo started, once it is up (one still starting is stopAllAgents()'s). */
  agent?: ConsulAgent;
  instances: InstanceProcess[];
  app?: INestApplicationContext;
} = { instances: [] };

async function useOrStartAgent(): Promise<{ target: ConsulTarget; leader: string }> {
  const wanted = targetFromEnv(process.env);
  const source = process.env.CONSUL_HTTP_ADDR ? 'CONSUL_HTTP_ADDR' : 'the default address';
  try {
    await leaderOf(wanted);
    const leader = await waitForLeader(wanted, 10_000);
    info(`using the agent at ${wanted.url} (${source}); leader ${leader}`);
    return { target: wanted, leader };
  } catch (error) {
    info(`no agent answers at ${wanted.url} (${source}): ${errorMessage(error)}`);
  }
  const binary = consulBinary();
  const version = execFileSync(binary, ['version'], { encoding: 'utf8' }).split('\n')[0].trim();
  info(`starting a dev agent: ${version} (${binary})`);
  const agent = await startConsulAgent();
  started.agent = agent;
  const target: ConsulTarget = {
    host: agent.bind,
    port: agent.httpPort,
    secure: false,
    url: agent.baseUrl,
  };
  const leader = await leaderOf(target);
  info(`dev agent pid ${agent.pid} on ${agent.baseUrl}; leader ${leader}`);
  return { target, leader };
}

function consulEnv(target: ConsulTarget): NodeJS.ProcessEnv {
  return {
    DEMO_CONSUL_HOST: target.host,
    DEMO_CONSUL_PORT: String(target.port),
    DEMO_CONSUL_SECURE: String(target.secure),
  };
}

/** Starts instance `n`; a port taken between picking and binding it gets a new port. */
async function startInstance(
  n: number,
  target: ConsulTarget,
): Promise<{ process: InstanceProcess; ready: ReadyMessage }> {
  const label = `${SERVICE}-${n}`;
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    if (aborting) throw new Error('aborted');
    const child = InstanceProcess.start(new URL('./orders.main.js', import.meta.url), label, {
      ...process.env,
      ...consulEnv(target),
      ORDERS_INSTANCE: String(n),
      ORDERS_PORT: String(port),
      ORDERS_ZONE: ZONES[(n - 1) % ZONES.length],
    });
    started.instances.push(child);
    board.follow(label, child);
    try {
      return { process: child, ready: await child.ready(30_000) };
    } catch (error) {
      if (/EADDRINUSE/.test(child.output) && attempt < 3) {
        warn(`${label}: port ${port} was taken; retrying on a new port`);
        continue;
      }
      throw new Error(`${label} did not start: ${errorMessage(error)}`, { cause: error });
    }
  }
}

function printInstances(instances: ServiceInstance[]): void {
  table(
    ['serviceId', 'address:port', 'tags', 'node'],
    instances.map((i) => [i.serviceId, `${i.address}:${i.port}`, i.tags.join(','), i.node]),
  );
}

/**
 * Waits (bounded) until the running instances' partitions cover all of them, spread over
 * `alive`; prints what each instance reported meanwhile. Resolves with that moment (Date.now()).
 */
async function covered(alive: string[]): Promise<number> {
  const at = await withDeadline(
    `the table to cover all ${PARTITIONS} partitions on ${alive.join(', ')}`,
    20_000,
    board.covered(alive),
  );
  board.printLog();
  return at;
}

function coverage(what: string, alive: string[], ms: number, since: string): void {
  info(
    `${what}: all ${PARTITIONS} partitions owned, each once, by ${alive.join(' + ')}, ` +
      `${ms} ms after ${since}`,
  );
}

function printMoves(before: Owners, after: Owners): void {
  const moves = ShardBoard.moves(before, after);
  info(`moved: ${moves.length > 0 ? moves.join('; ') : 'nothing'}`);
}

/** The demo's checks on what discover() says about an instance that just left with SIGTERM. */
async function checkGone(
  directory: DirectoryService,
  target: ConsulTarget,
  victimId: string,
  others: string[],
): Promise<void> {
  const first = await directory.instancesOf(SERVICE);
  let after = first;
  if (first.some((i) => i.serviceId === victimId)) {
    warn(`${victimId} was still listed right after its process exited; waiting for Consul`);
    after = await waitFor(
      async () => {
        const list = await directory.instancesOf(SERVICE);
        return list.some((i) => i.serviceId === victimId) ? undefined : list;
      },
      { timeoutMs: 10_000, intervalMs: 50, message: `${victimId} to leave Consul` },
    );
  }
  printInstances(after);
  const missing = others.filter((id) => !after.some((i) => i.serviceId === id));
  if (missing.length > 0)
    throw new Error(`still-running instances vanished: ${missing.join(', ')}`);
  if (!target.secure) {
    const catalog = (await getJson(`${target.url}/v1/catalog/service/${SERVICE}`, 2_000)) as {
      ServiceID: string;
    }[];
    if (catalog.some((entry) => entry.ServiceID === victimId)) {
      throw new Error(`${victimId} is still in Consul's catalog`);
    }
  }
  info(
    after === first
      ? `${victimId} is gone from discover(): deregistered before its process exited`
      : `${victimId} is gone from discover(), but only after its process had exited`,
  );
}

async function main(): Promise<void> {
  step('Consul');
  const agent = await useOrStartAgent();
  Object.assign(process.env, consulEnv(agent.target));

  step(
    `Starting 3 instances of "${SERVICE}" (separate Node processes, Nest HTTP apps) ` +
      `sharing ${PARTITIONS} partitions`,
  );
  const forked = board.mark();
  const instances = await Promise.all([1, 2, 3].map((n) => startInstance(n, agent.target)));
  const allReady = Date.now();
  for (const { ready } of instances) {
    info(`${ready.serviceId}: pid ${ready.pid}, listening on ${ready.address}:${ready.port}`);
  }
  info(
    `all 3 registered and listening ${allReady - forked} ms after the forks (log times below: since the forks)`,
  );
  const ids = instances.map((i) => i.ready.serviceId);
  const [first, second, third] = ids;
  coverage('start-up', ids, (await covered(ids)) - allReady, 'the last one was ready');
  let table = board.printTable();

  step('Starting the directory app (DirectoryService injects DISCOVERY_PROVIDER)');
  const app = await NestFactory.createApplicationContext(DirectoryModule, { logger });
  started.app = app;
  if (aborting) throw new Error('aborted');
  const directory = app.get(DirectoryService);

  step(`discover('${SERVICE}')`);
  const found = await waitFor(
    async () => {
      const list = await directory.instancesOf(SERVICE);
      return ids.every((id) => list.some((i) => i.serviceId === id)) ? list : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 50, message: `all of ${ids.join(', ')} to be discovered` },
  );
  printInstances(found);
  const mine = found.filter((i) => ids.includes(i.serviceId));
  const answers = await Promise.all(
    mine.map(async (i) => {
      const body = (await getJson(`http://${i.address}:${i.port}/`, 2_000)) as {
        serviceId?: string;
      };
      if (body.serviceId !== i.serviceId) {
        throw new Error(`${i.address}:${i.port} answered as ${body.serviceId}, not ${i.serviceId}`);
      }
      return i.serviceId;
    }),
  );
  info(`each discovered address answers as itself: ${answers.join(', ')}`);

  const key = 'order-1001';
  const asked = mine[0];
  const view = (await getJson(
    `http://${asked.address}:${asked.port}/orders/${key}/owner`,
    2_000,
  )) as { partition: number; owner?: string };
  const owner = mine.find((i) => i.serviceId === view.owner);
  if (!owner) throw new Error(`${asked.serviceId} names no running owner for ${key}`);
  const ownView = (await getJson(
    `http://${owner.address}:${owner.port}/orders/${key}/owner`,
    2_000,
  )) as { mine: boolean; token?: number };
  if (!ownView.mine) throw new Error(`${owner.serviceId} does not own the partition of ${key}`);
  info(
    `${asked.serviceId}: partitionOf('${key}') = ${view.partition}, ownerOf → ${owner.serviceId}; ` +
      `${owner.serviceId}: owns → true` +
      (ownView.token !== undefined ? `, fencing token ${ownView.token}` : ''),
  );

  const victim = instances[1];
  step(`Stopping ${second} (pid ${victim.ready.pid}) with SIGTERM: a planned leave`);
  const t0 = board.mark();
  const exit = await victim.process.stop(15_000);
  info(`${second} exited (${describeExit(exit)}) ${Date.now() - t0} ms after SIGTERM`);
  if (exit.code !== null && exit.code !== 0) {
    throw new Error(`${second} exited with code ${exit.code}:\n${victim.process.output}`);
  }
  const leave = (await covered([first, third])) - t0;
  coverage(`SIGTERM ${second}`, [first, third], leave, 'the signal');
  let next = board.printTable(table);
  printMoves(table, next);
  table = next;

  step(`discover('${SERVICE}') again`);
  await checkGone(directory, agent.target, second, [first, third]);

  const crash = instances[2];
  step(
    `Killing ${third} (pid ${crash.ready.pid}) with SIGKILL: a crash, noticed after its 3 s TTL`,
  );
  const t1 = board.mark();
  crashed.push(third);
  await crash.process.kill();
  const failover = (await covered([first])) - t1;
  coverage(`SIGKILL ${third}`, [first], failover, 'the signal');
  next = board.printTable(table);
  printMoves(table, next);
  table = next;

  step(`Starting a fourth instance, ${SERVICE}-4: a join`);
  const t2 = board.mark();
  const fourth = await startInstance(4, agent.target);
  const joined = Date.now();
  info(
    `${fourth.ready.serviceId}: pid ${fourth.ready.pid}, registered and listening ` +
      `${joined - t2} ms after the fork (log times below: since the fork)`,
  );
  const pair = [first, fourth.ready.serviceId];
  const join = (await covered(pair)) - joined;
  coverage(`${fourth.ready.serviceId} joining`, pair, join, 'it was ready');
  next = board.printTable(table);
  printMoves(table, next);

  info(
    `handoffs: SIGTERM ${leave} ms, SIGKILL ${failover} ms (${crashBound}), ` +
      `join ${join} ms (from ready)`,
  );
  if (process.env.DEMO_SHARD_MODE !== 'cooperative') await jobAct(agent.target);
  const problems = await stopEverything();
  if (problems.length > 0) throw new Error(`cleanup failed:\n  ${problems.join('\n  ')}`);
}

/** A time of day, to the millisecond. */
function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23);
}

/**
 * `@ClusterCron('* * * * * *', { name: 'digest' })` (orders.module.ts) on three instances: one run
 * per second across them; its owner is SIGKILLed; the new owner runs the latest missed instant
 * late (the others it reports skipped in its log) and goes on with a higher token.
 */
async function jobAct(target: ConsulTarget): Promise<void> {
  step(`Starting ${SERVICE}-5, so that three instances run the 'digest' job (every second)`);
  await startInstance(5, target);
  const runs: JobMessage[] = [];
  const arrivals = new Map<JobMessage, number>();
  const alive = started.instances.filter((i) => i.running);
  for (const instance of alive) {
    instance.child.on('message', (message: unknown) => {
      if (!isJobMessage(message)) return;
      runs.push(message);
      arrivals.set(message, Date.now());
    });
  }
  const print = (run: JobMessage): void =>
    info(
      `digest ${clock(run.at)} run by ${run.serviceId}, token ${run.token}` +
        (run.late ? '  ← late: the catch-up of a missed instant' : ''),
    );
  await waitFor(() => runs.length >= 4, { timeoutMs: 20_000, message: '4 runs of digest' });
  runs.slice(0, 4).forEach(print);
  const owner = runs.at(-1)!.serviceId;
  const victim = alive.find((i) => i.label === owner)!;
  step(`Killing ${owner}, the job's owner, with SIGKILL`);
  const killedAt = Date.now();
  const before = runs.length;
  crashed.push(owner);
  await victim.kill();
  const late = await waitFor(() => runs.slice(before).find((r) => r.late), {
    timeoutMs: 20_000,
    message: 'the late catch-up run',
  });
  await waitFor(() => runs.length >= runs.indexOf(late) + 3, {
    timeoutMs: 10_000,
    message: 'runs after the catch-up',
  });
  runs.slice(4).forEach(print);
  const instants = runs.map((r) => r.at);
  const once = new Set(instants).size === instants.length;
  const lastBefore = runs[before - 1];
  info(
    `the late run (of ${clock(late.at)}) came ${arrivals.get(late)! - killedAt} ms after the kill ` +
      `(${crashBound}); ${late.serviceId}'s log reports the instants between ${clock(lastBefore.at)} ` +
      `and it as skipped; token ${lastBefore.token} → ${late.token}; each instant run at most once: ${once}`,
  );
  if (!once) throw new Error('an instant of digest ran twice');
  if (late.token <= lastBefore.token) throw new Error('the new owner has no higher token');
}

/**
 * What a crash leaves in Consul: the killed instance stays registered (critical) until
 * `deregisterCriticalServiceAfter`, and the lock keys stay (tokens must only grow while the
 * keyspace lives). The demo's keyspace ends with the demo, so on an agent that outlives it
 * (CONSUL_HTTP_ADDR) both are removed; a dev agent the demo started loses them anyway.
 */
async function forgetCrashed(problems: string[]): Promise<void> {
  if (started.agent || !started.app) return;
  const target = targetFromEnv(process.env);
  const ids = crashed.splice(0);
  const directory = started.app.get(DirectoryService);
  for (const id of ids) {
    if (!(await directory.forget(id))) problems.push(`could not deregister ${id}`);
  }
  try {
    const { status } = await httpRequest(
      'DELETE',
      `${target.url}/v1/kv/${LOCK_PREFIX}?recurse=true`,
      2_000,
    );
    if (status !== 200) problems.push(`deleting the lock keys: HTTP ${status}`);
  } catch (error) {
    problems.push(`deleting the lock keys: ${errorMessage(error)}`);
  }
}

/** Stops what the demo started, in reverse order; collects failures instead of stopping early. */
async function stopEverything(): Promise<string[]> {
  const problems: string[] = [];
  const running = started.instances.filter((i) => i.running);
  if (running.length > 0) {
    step(`Stopping ${running.map((i) => i.label).join(', ')} with SIGTERM`);
    await Promise.all(
      running.map(async (instance) => {
        try {
          const exit = await instance.stop(15_000);
          info(`${instance.label} exited (${describeExit(exit)})`);
        } catch (error) {
          problems.push(`${instance.label}: ${errorMessage(error)}`);
        }
      }),
    );
  }
  await forgetCrashed(problems);
  if (started.app) {
    step('Closing the directory app (app.close())');
    const app = started.app;
    started.app = undefined;
    try {
      await withDeadline('the directory app to close', 10_000, app.close());
    } catch (error) {
      problems.push(`directory app: ${errorMessage(error)}`);
    }
  }
  if (started.agent) {
    const agent = started.agent;
    started.agent = undefined;
    step(`Stopping the dev agent (pid ${agent.pid})`);
    try {
      await withDeadline('the Consul agent to exit', 10_000, agent.stop());
    } catch (error) {
      problems.push(`consul agent: ${errorMessage(error)}`);
    }
  }
  // An agent still starting when the demo was aborted.
  await stopAllAgents();
  return problems;
}

let aborting = false;

/** Signals and crashes: stop what the demo started, then exit with `exitCode`. */
function abort(reason: string, exitCode: number): void {
  if (aborting) return;
  aborting = true;
  process.exitCode = exitCode;
  process.stderr.write(`\n${reason}\nstopping everything the demo started\n`);
  void stopEverything()
    .then((problems) => {
      for (const problem of problems) process.stderr.write(`cleanup: ${problem}\n`);
    })
    .finally(() => process.exit(exitCode));
}

process.once('SIGINT', () => abort('SIGINT received', 130));
process.once('SIGTERM', () => abort('SIGTERM received', 143));
process.on('uncaughtException', (error) =>
  abort(`demo crashed: ${error.stack ?? error.message}`, 1),
);
process.on('unhandledRejection', (reason) => abort(`demo crashed: ${errorMessage(reason)}`, 1));
// A reader that goes away (`npm run demo | head`) must not kill the demo before it cleans up.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

try {
  await main();
  step(`Done in ${totalSeconds()} s`);
  // Everything was closed, so the process must now exit on its own. If something still holds
  // the event loop (a socket, a timer), say what instead of hanging.
  setTimeout(() => {
    const handles = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
    process.stderr.write(
      `demo failed: the process did not exit on its own within 5 s after everything was closed; ` +
        `still active: ${handles.join(', ') || '(only timers)'}\n`,
    );
    process.exit(1);
  }, 5_000).unref();
} catch (error) {
  // When abort() runs (signal, crash), it reports, cleans up and exits by itself.
  if (!aborting) {
    process.exitCode = 1;
    process.stderr.write(`\ndemo failed: ${errorMessage(error)}\n`);
    const problems = await stopEverything();
    for (const problem of problems) process.stderr.write(`cleanup: ${problem}\n`);
  }
}
