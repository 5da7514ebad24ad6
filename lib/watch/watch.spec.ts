import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { freezeInstances, sameInstances } from './instance-set.js';
import { nextIndex } from './blocking-query.loop.js';
import { watchKey } from './watch-key.js';
import { LOCAL_DATACENTER } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type { IndexedResult } from '../consul/consul.types.js';
import { ServiceWatch, type ServiceWatchOptions } from './service-watch.js';

const instance = (serviceId: string, meta: Record<string, string> = {}): ServiceInstance => ({
  serviceId,
  name: 'orders',
  address: '127.0.0.1',
  port: 1,
  tags: ['a'],
  meta,
  node: 'n1',
  datacenter: 'dc1',
});

describe('nextIndex', () => {
  it('follows Consul: reset to 0 when the index goes backwards, never below 1', () => {
    expect(nextIndex(0, 10)).toBe(10);
    expect(nextIndex(10, 12)).toBe(12);
    expect(nextIndex(10, 10)).toBe(10);
    expect(nextIndex(10, 3)).toBe(0);
    expect(nextIndex(0, 0)).toBe(1);
  });
});

describe('instance sets', () => {
  it('treats deep-equal sets as the same, whatever the meta key order', () => {
    expect(
      sameInstances([instance('a', { x: '1', y: '2' })], [instance('a', { y: '2', x: '1' })]),
    ).toBe(true);
    expect(sameInstances([instance('a')], [instance('b')])).toBe(false);
    expect(sameInstances([instance('a')], [instance('a'), instance('b')])).toBe(false);
    expect(sameInstances([instance('a', { x: '1' })], [instance('a', { x: '2' })])).toBe(false);
  });

  it('freezes what is shared between subscribers', () => {
    const [frozen] = freezeInstances([instance('a')]);
    expect(Object.isFrozen(frozen)).toBe(true);
    expect(Object.isFrozen(frozen.tags)).toBe(true);
    expect(Object.isFrozen(frozen.meta)).toBe(true);
  });
});

describe('watchKey', () => {
  it('separates name, tag and datacenter', () => {
    expect(watchKey('a')).toBe(watchKey('a', {}));
    expect(watchKey('a', { tag: 'x' })).not.toBe(watchKey('a'));
    expect(watchKey('a', { datacenter: 'dc2' })).not.toBe(watchKey('a', { tag: 'dc2' }));
  });

  it("separates the configured datacenter (absent) from the agent's own (LOCAL_DATACENTER)", () => {
    expect(watchKey('a', { datacenter: LOCAL_DATACENTER })).not.toBe(watchKey('a'));
  });
});

describe('ServiceWatch in feed mode (a transport stub: a real agent cannot fail one read on demand)', () => {
  const options: ServiceWatchOptions = {
    waitMs: 60_000,
    consistency: 'default',
    rateLimit: { perSecond: 1_000, burst: 100 },
    backoff: { initialDelayMs: 5, maxDelayMs: 20 },
  };

  /** Answers `health.service` reads from `answers` in turn: an Error rejects, a set resolves. */
  function stubTransport(answers: (ServiceInstance[] | Error)[], probe: () => unknown = () => 0) {
    const closeSignal = new AbortController().signal;
    const calls: number[] = [];
    /** `probe()` as each read starts. */
    const probes: unknown[] = [];
    const transport = {
      closed: false,
      closeSignal,
      watchHealthyInstances: (): Promise<IndexedResult<ServiceInstance[]>> => {
        calls.push(Date.now());
        probes.push(probe());
        const next = answers.length > 1 ? answers.shift()! : answers[0];
        return next instanceof Error
          ? Promise.reject(next)
          : Promise.resolve({ value: next, index: 10 + calls.length });
      },
    } as unknown as ConsulTransport;
    return { transport, calls, probes };
  }

  it('retries a failed re-read with the watch backoff until it succeeds, stale meanwhile', async () => {
    const before = [instance('a')];
    const after = [instance('a'), instance('b')];
    const failure = new Error('socket hang up');
    let watch: ServiceWatch | undefined = undefined;
    const { transport, calls, probes } = stubTransport([before, failure, failure, after], () => ({
      stale: watch?.freshness?.stale,
      size: watch?.snapshot?.length,
    }));
    watch = new ServiceWatch('orders', {}, transport, options);
    await watch.refresh();
    expect(watch.snapshot).toEqual(before);

    // The feed saw a change; the re-read fails twice, then Consul answers.
    void watch.refresh();
    await waitUntil(() => watch.snapshot?.length === 2);
    expect(watch.snapshot).toEqual(after);
    expect(watch.freshness?.stale).toBe(false);
    expect(calls).toHaveLength(4);
    // Stale (the last set served) while the retries ran.
    expect(probes.slice(2)).toEqual([
      { stale: true, size: 1 },
      { stale: true, size: 1 },
    ]);
    await watch.stop();
  });

  it('stop() ends the retries', async () => {
    const { transport, calls } = stubTransport([new Error('socket hang up')]);
    const watch = new ServiceWatch('orders', {}, transport, options);
    void watch.refresh();
    await waitUntil(() => calls.length >= 2);
    await watch.stop();
    const made = calls.length;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(calls.length).toBe(made);
  });
});

async function waitUntil(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
