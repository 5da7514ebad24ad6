// Nest application contexts for the benchmark, with decorators applied as functions.
import 'reflect-metadata';
import { setImmediate } from 'node:timers';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DISCOVERY_PROVIDER, DiscoveryModule, DiscoveryService } from '../dist/index.js';

/**
 * An application context importing DiscoveryModule.forRoot(options). Each call defines a fresh
 * module class, so apps never share module instances.
 */
export async function discoveryApp(options) {
  class AppModule {}
  Module({ imports: [DiscoveryModule.forRoot(options)] })(AppModule);
  const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
  await app.init();
  return {
    app,
    service: app.get(DiscoveryService),
    provider: app.get(DISCOVERY_PROVIDER),
    close: () => app.close(),
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
  class AppModule {}
  Module({ providers: [Greeter] })(AppModule);
  const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
  await app.init();
  return { app, close: () => app.close() };
}

/** Module options for an app on the given agent (host/port) registering `name` on `port`. */
export function moduleOptions(agent, { name, port, register = true, ...rest } = {}) {
  const options = {
    consul: { host: agent.host, port: agent.port },
    autoRegister: register,
    ...rest,
  };
  if (register) {
    options.service = { name, id: `${name}-${port}`, address: '127.0.0.1', port };
  }
  return options;
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
