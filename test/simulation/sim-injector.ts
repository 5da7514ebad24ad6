import type { Provider, Type } from '@nestjs/common';
import {
  OPTIONAL_DEPS_METADATA,
  PARAMTYPES_METADATA,
  SELF_DECLARED_DEPS_METADATA,
} from '@nestjs/common/constants.js';

type Token = string | symbol | Type<unknown>;

interface Hooks {
  onModuleInit?(): unknown;
  onApplicationBootstrap?(): unknown;
  beforeApplicationShutdown?(): unknown;
  onApplicationShutdown?(): unknown;
}

/**
 * The module's providers (`discoveryCoreProviders`, as `DiscoveryTestingModule` lists them)
 * wired by their own constructor metadata and run through Nest's lifecycle hooks, without Nest's
 * module scanning: an application context costs ~10 ms, which a batch of thousands of simulated
 * instances cannot pay. Handles what the providers use: classes, `useValue`, `useFactory`,
 * `useExisting`, `@Inject()` and `@Optional()`.
 */
export class SimInjector {
  private readonly providers = new Map<Token, Provider>();
  private readonly instances = new Map<Token, unknown>();

  constructor(providers: Provider[]) {
    for (const provider of providers) {
      const token = typeof provider === 'function' ? provider : (provider.provide as Token);
      this.providers.set(token, provider);
    }
  }

  get<T>(token: Token): T {
    return this.resolve(token, false) as T;
  }

  /** Every provider built, then each phase's hooks in parallel across providers (as Nest does). */
  async init(): Promise<void> {
    for (const token of this.providers.keys()) this.resolve(token, false);
    await this.phase('onModuleInit');
    await this.phase('onApplicationBootstrap');
  }

  async close(): Promise<void> {
    await this.phase('beforeApplicationShutdown');
    await this.phase('onApplicationShutdown');
  }

  private async phase(hook: keyof Hooks): Promise<void> {
    const instances = [...new Set(this.instances.values())] as Hooks[];
    await Promise.all(instances.map((instance) => instance?.[hook]?.()));
  }

  private resolve(token: Token, optional: boolean): unknown {
    if (this.instances.has(token)) return this.instances.get(token);
    const provider = this.providers.get(token);
    if (!provider) {
      if (optional) return undefined;
      throw new Error(`SimInjector: no provider for ${String(token)}`);
    }
    let instance: unknown;
    if (typeof provider === 'function') instance = this.construct(provider);
    else if ('useValue' in provider) instance = provider.useValue;
    else if ('useFactory' in provider) {
      const inject = (provider.inject ?? []) as Token[];
      instance = provider.useFactory(...inject.map((t) => this.resolve(t, false)));
    } else if ('useExisting' in provider)
      instance = this.resolve(provider.useExisting as Token, false);
    else instance = this.construct(provider.useClass);
    this.instances.set(token, instance);
    return instance;
  }

  private construct(type: Type<unknown>): unknown {
    const types = (Reflect.getMetadata(PARAMTYPES_METADATA, type) ?? []) as Token[];
    const declared = (Reflect.getMetadata(SELF_DECLARED_DEPS_METADATA, type) ?? []) as {
      index: number;
      param: Token;
    }[];
    const optional = (Reflect.getMetadata(OPTIONAL_DEPS_METADATA, type) ?? []) as number[];
    const args = types.map((t, i) => {
      const token = declared.find((d) => d.index === i)?.param ?? t;
      return this.resolve(token, optional.includes(i));
    });
    return new type(...args);
  }
}
