/**
 * The few parts of `@opentelemetry/api`'s `metrics` this library uses, described structurally:
 * the optional peer stays out of our emitted types, so a consumer without it still type-checks.
 * `metrics.spec.ts` checks that the real API is assignable to these.
 */
export type MetricAttributes = Record<string, string | number | boolean>;

export interface InstrumentOptions {
  description?: string;
  unit?: string;
  advice?: { explicitBucketBoundaries?: number[] };
}

export interface CounterInstrument {
  add(value: number, attributes?: MetricAttributes): void;
}

export interface HistogramInstrument {
  record(value: number, attributes?: MetricAttributes): void;
}

export interface ObservationResult {
  observe(value: number, attributes?: MetricAttributes): void;
}

export type ObservationCallback = (result: ObservationResult) => void;

export interface ObservableInstrument {
  addCallback(callback: ObservationCallback): void;
  removeCallback(callback: ObservationCallback): void;
}

export interface MeterLike {
  createCounter(name: string, options?: InstrumentOptions): CounterInstrument;
  createHistogram(name: string, options?: InstrumentOptions): HistogramInstrument;
  createObservableGauge(name: string, options?: InstrumentOptions): ObservableInstrument;
  createObservableUpDownCounter(name: string, options?: InstrumentOptions): ObservableInstrument;
}

/** `metrics` of `@opentelemetry/api`. */
export interface MetricsApi {
  getMeter(name: string, version?: string): MeterLike;
}
