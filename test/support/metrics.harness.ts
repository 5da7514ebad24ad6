import { metrics, type Attributes } from '@opentelemetry/api';
import {
  DataPointType,
  MeterProvider,
  MetricReader,
  type Histogram,
} from '@opentelemetry/sdk-metrics';

/** One data point of one instrument, as the SDK collected it. */
export interface MetricPoint {
  name: string;
  unit: string;
  /** 'sum' (counters, up-down counters), 'gauge' or 'histogram'. */
  kind: 'sum' | 'gauge' | 'histogram';
  /** Monotonic sums only (counters). */
  monotonic?: boolean;
  attributes: Attributes;
  /** The sum or gauge value; for a histogram, the sum of the recorded values. */
  value: number;
  /** Histograms: how many values were recorded. */
  count?: number;
}

/** A reader the test pulls from (`collect()`), no timer. */
class PullReader extends MetricReader {
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }

  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * The real OpenTelemetry metrics SDK as the global meter provider, read on demand. `install()`
 * before the app is created (the module resolves its meter then); `uninstall()` after.
 */
export class MetricsCapture {
  private constructor(
    private readonly provider: MeterProvider,
    private readonly reader: PullReader,
  ) {}

  static install(): MetricsCapture {
    const reader = new PullReader();
    const provider = new MeterProvider({ readers: [reader] });
    if (!metrics.setGlobalMeterProvider(provider)) {
      throw new Error('a global meter provider is registered already');
    }
    return new MetricsCapture(provider, reader);
  }

  /** Every data point now (cumulative), observable callbacks included. */
  async collect(): Promise<MetricPoint[]> {
    const { resourceMetrics, errors } = await this.reader.collect();
    if (errors.length > 0) throw errors[0];
    return resourceMetrics.scopeMetrics.flatMap((scope) =>
      scope.metrics.flatMap((metric) =>
        metric.dataPoints.map((point): MetricPoint => {
          const base = {
            name: metric.descriptor.name,
            unit: metric.descriptor.unit,
            attributes: point.attributes,
          };
          if (metric.dataPointType === DataPointType.HISTOGRAM) {
            const histogram = point.value as Histogram;
            return {
              ...base,
              kind: 'histogram',
              value: histogram.sum ?? 0,
              count: histogram.count,
            };
          }
          if (metric.dataPointType === DataPointType.SUM) {
            return {
              ...base,
              kind: 'sum',
              monotonic: metric.isMonotonic,
              value: point.value as number,
            };
          }
          return { ...base, kind: 'gauge', value: point.value as number };
        }),
      ),
    );
  }

  /** The points of `name` whose attributes include every entry of `attributes`. */
  async points(name: string, attributes: Attributes = {}): Promise<MetricPoint[]> {
    const all = await this.collect();
    return all.filter(
      (p) =>
        p.name === name &&
        Object.entries(attributes).every(([key, value]) => p.attributes[key] === value),
    );
  }

  /** The value of the one point of `name` with `attributes` (`undefined` when none). */
  async value(name: string, attributes: Attributes = {}): Promise<number | undefined> {
    const points = await this.points(name, attributes);
    if (points.length > 1) throw new Error(`${points.length} points of ${name} match`);
    return points[0]?.value;
  }

  /** Histograms: how many values were recorded in the points of `name` with `attributes`. */
  async count(name: string, attributes: Attributes = {}): Promise<number> {
    const points = await this.points(name, attributes);
    return points.reduce((sum, p) => sum + (p.count ?? 0), 0);
  }

  /** Unregisters the global provider and shuts it down. */
  async uninstall(): Promise<void> {
    metrics.disable();
    await this.provider.shutdown();
  }
}
