// Nest apps and Consul helpers for the benchmark, on the repository's test toolkit
// (test/support, compiled into .tmp/toolkit by `npm run bench`'s prebench step) and the BUILT
// library (dist/).
import 'reflect-metadata';
import { setImmediate } from 'node:timers';
import { Injectable } from '@nestjs/common';
import { AppHarness, SILENT_LOGGER } from '../.tmp/toolkit/toolkit.js';
import { DISCOVERY_PROVIDER, DiscoveryModule, DiscoveryService } from '../dist/index.js';

const apps = new AppHarness(DiscoveryModule, () => SILENT_LOGGER);

/** An app importing DiscoveryModule.forRoot(options) (dist/), bootstrapped. */
export async function discoveryApp(options) {
  const app = await apps.start(options);
  return {
    app,
    service: app.get(DiscoveryService),
    provider: app.get(DISCOVERY_PROVIDER),
    close: () => apps.close(app),
  };
}

/** The same shape of application without the module: one trivial provider. */
export async function plainApp() {
  class Greeter {
    hello() {
      return 'hello';
    }
  }
  Injectable()(Greeter);
  const app = await apps.init(await apps.compile({ providers: [Greeter] }));
  return { app, close: () => apps.close(app) };
}

/**
 * Module options for an app on `target` (a ConsulAgent or a CountingProxy of the toolkit)
 * registering `name` on `port`.
 */
export function moduleOptions(target, { name, port, register = true, ...rest } = {}) {
  const consul =
    'httpPort' in target
      ? { host: target.bind, port: target.httpPort }
      : { host: target.host, port: target.port };
  const options = { consul, autoRegister: register, ...rest };
  if (register) {
    options.service = { name, id: `${name}-${port}`, address: '127.0.0.1', port };
  }
  return options;
}

/** How the benchmark makes changes in Consul: the toolkit's raw API, independent of the library. */
export function benchApi(agent) {
  const api = agent.api();
  const check = (id) => `service:${id}`;
  return {
    /** A service instance with a TTL check that starts passing (a new TTL check starts critical). */
    register: (name, id, port, extra = {}) =>
      api.registerService({
        Name: name,
        ID: id,
        Address: '127.0.0.1',
        Port: port,
        ...extra,
        Check: { TTL: '30m', Status: 'passing' },
      }),
    deregister: (id) => api.deregisterService(id),
    failTtl: (id) => api.failTtl(check(id)),
    passTtl: (id) => api.passTtl(check(id)),
    passing: (name) => api.healthService(name, { passing: true }),
    /** Runs `fn` over `items` with at most `width` in flight. */
    async inBatches(items, width, fn) {
      for (let i = 0; i < items.length; i += width) {
        await Promise.all(items.slice(i, i + width).map((item, j) => fn(item, i + j)));
      }
    },
  };
}

/** Subscribes to watch(name) and resolves with the subscription once the first set arrived. */
export function watchReady(service, name, query, onEmit) {
  return new Promise((resolve, reject) => {
    let subscription;
    let first = true;
    const timer = setTimeout(
      () => reject(new Error(`watch(${name}) gave no set within 15 s`)),
      15_000,
    );
    subscription = service.watch(name, query).subscribe({
      next: (set) => {
        onEmit?.(set);
        if (first) {
          first = false;
          clearTimeout(timer);
          // subscribe() may emit synchronously, before `subscription` is assigned.
          setImmediate(() => resolve(subscription));
        }
      },
      error: (error) => {
        clearTimeout(timer);
        reject(error);
      },
    });
  });
}
