import { Inject, Injectable, Optional } from '@nestjs/common';
import type { AxiosAdapter } from 'axios';
import { Agent, Dispatcher, fetch as undiciFetch, type RequestInit, type Response } from 'undici';
import { DISCOVERY_SETTINGS } from '../discovery.constants.js';
import { DiscoveryError } from '../errors/discovery.error.js';
import type { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { checkDiscoverQuery } from '../protocol/service-discovery.arguments.js';
import { DiscoveryMetrics } from '../metrics/discovery.metrics.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { DiscoverySettings } from '../settings/discovery.settings.js';
import { readPem } from '../settings/pem.js';
import { shardRoute } from '../sharding/shard-route.js';
import { WatchRegistry } from '../watch/watch.registry.js';
import { createAxiosAdapter } from './axios.adapter.js';
import { checkCallOptions, checkRequestUrl } from './http.arguments.js';
import { CALL_OPTIONS, DiscoveryDispatcher, type CallOptions } from './discovery.dispatcher.js';
import { LoadBalancer } from './load-balancer.js';
import { OutlierEjection } from './outlier-ejection.js';
import { RetryBudget } from './retry-budget.js';
import { ServiceResolver } from './service-resolver.js';

export interface DiscoveryRequestInit extends RequestInit {
  /** The whole call, all attempts included, until the response headers. */
  deadlineMs?: number;
  /** Allow retries of POST/PATCH after the request may have been sent. */
  idempotent?: boolean;
  /** Route to the instance that owns partitionOf(shardKey) in the target's table. */
  shardKey?: string;
}

/** fetch wraps every dispatch error in `TypeError('fetch failed')`: ours reject as themselves. */
function unwrapDiscoveryError(error: unknown): never {
  const cause = (error as { cause?: unknown }).cause;
  throw cause instanceof DiscoveryError ? cause : error;
}

/** A dispatcher that hands one call's options to the discovery interceptor. */
class CallDispatcher extends Dispatcher {
  constructor(
    private readonly inner: Dispatcher,
    private readonly options: CallOptions,
  ) {
    super();
  }

  override dispatch(
    opts: Dispatcher.DispatchOptions,
    handler: Dispatcher.DispatchHandler,
  ): boolean {
    return this.inner.dispatch({ ...opts, [CALL_OPTIONS]: this.options } as never, handler);
  }
}

/**
 * Calls a service by its name: `http://orders/api/x` goes to a passing instance of `orders`,
 * load-balanced, with passive ejection and retries on another instance (README "Calling a
 * service"). Never a global dispatcher, never a patched global.
 */
@Injectable()
export class DiscoveryHttpClient {
  /** An undici `Dispatcher` doing the same resolution, balancing, ejection and retries. */
  readonly dispatcher: Dispatcher;
  private readonly agent: Agent;
  private readonly resolver: ServiceResolver;
  private readonly balancer: LoadBalancer;
  private readonly ejection: OutlierEjection;
  private axios?: AxiosAdapter;

  constructor(
    @Inject(DISCOVERY_SETTINGS) settings: DiscoverySettings,
    watches: WatchRegistry,
    @Optional() metrics: DiscoveryMetrics = DiscoveryMetrics.noop,
  ) {
    const { http, consul } = settings;
    const { tls } = http;
    this.agent = new Agent({
      connect: {
        timeout: http.timeouts.connectMs,
        ...(tls && {
          ca: readPem(tls.ca),
          cert: readPem(tls.cert),
          key: readPem(tls.key),
          rejectUnauthorized: tls.rejectUnauthorized,
        }),
      },
    });
    this.ejection = new OutlierEjection(http.outlier);
    this.resolver = new ServiceResolver(watches, {
      timeoutMs: consul.timeoutMs,
      idleWatchMs: http.idleWatchMs,
      newBudget: () => new RetryBudget(http.retry.budgetPercent, http.retry.minPerSecond),
      // Instances that left every passing set are forgotten (a returning one starts afresh).
      changed: (passing) => {
        this.ejection.retain(passing);
        this.balancer.retain(passing);
      },
    });
    this.balancer = new LoadBalancer(http.strategy);
    this.dispatcher = new DiscoveryDispatcher(this.agent, {
      settings: http,
      resolver: this.resolver,
      balancer: this.balancer,
      ejection: this.ejection,
      metrics,
    });
  }

  /**
   * WHATWG fetch (undici's) through `dispatcher`; rejects before any I/O on bad arguments. The
   * module's own errors (`NoInstanceError`, `DiscoveryTimeoutError`, …) reject as themselves, not
   * wrapped in fetch's `TypeError('fetch failed')`; transport errors stay as fetch reports them.
   */
  fetch(input: string | URL, init: DiscoveryRequestInit = {}): Promise<Response> {
    let dispatcher: Dispatcher;
    try {
      checkRequestUrl(input);
      const { deadlineMs, idempotent, shardKey } = checkCallOptions(init);
      dispatcher =
        deadlineMs === undefined && idempotent === undefined && shardKey === undefined
          ? this.dispatcher
          : new CallDispatcher(this.dispatcher, { deadlineMs, idempotent, shardKey });
    } catch (error) {
      const invalid: DiscoverySettingsError = error as DiscoverySettingsError;
      return Promise.reject(invalid);
    }
    // Not an async function, and init passed whole (fetch reads only its own members): this
    // path runs on every call, and each extra promise or object is client CPU.
    return undiciFetch(input, { ...init, dispatcher }).catch(unwrapDiscoveryError);
  }

  /**
   * For `@nestjs/axios`: `HttpModule.registerAsync({ inject: [DiscoveryHttpClient], useFactory:
   * (client) => ({ adapter: client.axiosAdapter() }) })`. Imports the optional peer `axios` on the
   * first call.
   */
  axiosAdapter(): AxiosAdapter {
    return (this.axios ??= createAxiosAdapter(this.dispatcher));
  }

  /**
   * The pick alone, from memory, ejection included; a name not watched yet starts its watch and
   * gives `undefined`.
   */
  choose(service: string, options: { shardKey?: string } = {}): ServiceInstance | undefined {
    checkDiscoverQuery(service, undefined);
    checkCallOptions(options);
    const known = this.resolver.known(service);
    if (!known || known.length === 0) return undefined;
    const eligible = this.ejection.eligible(known);
    if (options.shardKey === undefined) return this.balancer.pick(service, eligible);
    const order = shardRoute(service, known, options.shardKey);
    return order.map((id) => eligible.find((i) => i.serviceId === id)).find(Boolean);
  }

  /** Shutdown has begun: a call by name rejects at once from now on, and starts nothing. */
  stop(): void {
    this.resolver.stop();
  }

  /** Shutdown, after deregistration: watches released, sockets closed. */
  async close(): Promise<void> {
    this.resolver.close();
    await this.agent.destroy();
  }
}
