import type { DynamicModule, LoggerService, ModuleMetadata } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { CapturingLogger } from './capturing-logger.harness.js';

/** What the harness needs of DiscoveryModule: lib/ in the specs, dist/ in the benchmark. */
export interface ModuleWithForRoot<Options> {
  forRoot(options: Options): DynamicModule;
}

/** A logger that drops everything (Nest's `logger: false` for a testing module). */
export const SILENT_LOGGER: LoggerService = {
  log: () => undefined,
  error: () => undefined,
  warn: () => undefined,
  debug: () => undefined,
  verbose: () => undefined,
  fatal: () => undefined,
};

/**
 * In-process Nest apps (testing modules), each closed by `close()` or `closeAll()` (afterEach).
 * They log to a fresh CapturingLogger unless a logger is given.
 */
export class AppHarness<Options> {
  private readonly open = new Set<TestingModule>();

  constructor(
    private readonly discoveryModule: ModuleWithForRoot<Options>,
    private readonly defaultLogger: () => LoggerService = () => new CapturingLogger(),
  ) {}

  /** Compiles an app importing `DiscoveryModule.forRoot(options)`; `init()` bootstraps it. */
  create(options: Options, logger?: LoggerService): Promise<TestingModule> {
    return this.compile({ imports: [this.discoveryModule.forRoot(options)] }, logger);
  }

  /** Compiles and bootstraps an app importing `DiscoveryModule.forRoot(options)`. */
  async start(options: Options, logger?: LoggerService): Promise<TestingModule> {
    return this.init(await this.create(options, logger));
  }

  /** Compiles any module metadata (settings validated, no hooks run yet). */
  async compile(metadata: ModuleMetadata, logger?: LoggerService): Promise<TestingModule> {
    const builder = Test.createTestingModule(metadata);
    builder.setLogger(logger ?? this.defaultLogger());
    const app = await builder.compile();
    this.open.add(app);
    return app;
  }

  /** Bootstraps a compiled app (it stays in the set, so closeAll() also closes a failed one). */
  async init(app: TestingModule): Promise<TestingModule> {
    await app.init();
    return app;
  }

  async close(app: TestingModule): Promise<void> {
    if (!this.open.delete(app)) return;
    await app.close();
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled([...this.open].map((app) => this.close(app)));
  }
}
