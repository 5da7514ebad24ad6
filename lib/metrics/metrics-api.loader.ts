import { createRequire } from 'node:module';
import type { MetricsApi } from './metrics-api.types.js';

export type RequireFunction = (id: string) => unknown;

export interface LoadedMetricsApi {
  /** `undefined` when `@opentelemetry/api` is not installed or failed to load. */
  api?: MetricsApi;
  /** Why it failed to load, when it is installed but broken (not installed is no failure). */
  failure?: Error;
}

const NOT_INSTALLED = new Set(['MODULE_NOT_FOUND', 'ERR_MODULE_NOT_FOUND']);

/**
 * `metrics` of the optional peer `@opentelemetry/api`, loaded synchronously: no top-level await,
 * because CommonJS apps `require()` this ESM library. The CommonJS copy of the API sees the SDK
 * an ESM app registered, since the API keeps its registry on `globalThis`.
 */
export function loadMetricsApi(
  load: RequireFunction = createRequire(import.meta.url),
): LoadedMetricsApi {
  try {
    return { api: (load('@opentelemetry/api') as { metrics?: MetricsApi }).metrics };
  } catch (error) {
    const missing = NOT_INSTALLED.has((error as { code?: string }).code ?? '');
    return missing ? {} : { failure: error as Error };
  }
}
