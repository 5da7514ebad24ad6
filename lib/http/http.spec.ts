import { describe, expect, it } from '@jest/globals';
import type { Dispatcher } from 'undici';
import { asLegacy } from './handler-api.js';
import { instanceKey } from './instance-key.js';
import { LoadBalancer } from './load-balancer.js';
import { EWMA_DECAY_MS, PeakEwma } from './peak-ewma.js';
import { OutlierEjection } from './outlier-ejection.js';
import { RetryBudget } from './retry-budget.js';
import { isServiceHost, mayRetry, transportFailure } from './retry-policy.js';
import { seededRandom as prng } from '../../test/support/seeded-random.harness.js';

const ref = (serviceId: string, node = 'n1'): { serviceId: string; node: string } => ({
  serviceId,
  node,
});
const instances = (n: number): { serviceId: string; node: string }[] =>
  Array.from({ length: n }, (_, i) => ref(`s${i}`));

describe('LoadBalancer', () => {
  it('round-robin spreads sequential picks evenly, one cursor per service', () => {
    const lb = new LoadBalancer('round-robin');
    const three = instances(3);
    const counts = new Map<string, number>();
    for (let i = 0; i < 3_000; i++) {
      const id = lb.pick('orders', three)!.serviceId;
      counts.set(id, (counts.get(id) ?? 0) + 1);
      lb.pick('other', instances(2));
    }
    expect([...counts.values()]).toEqual([1_000, 1_000, 1_000]);
  });

  it('random covers every instance', () => {
    const lb = new LoadBalancer('random', prng(1));
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(lb.pick('orders', instances(4))!.serviceId);
    expect(seen.size).toBe(4);
  });

  it('least-request prefers the instance with fewer requests in flight', () => {
    const lb = new LoadBalancer('least-request', prng(2));
    const three = instances(3);
    const busy = Array.from({ length: 10 }, () => lb.started(ref('s0')));
    let toBusy = 0;
    for (let i = 0; i < 1_000; i++) if (lb.pick('orders', three)!.serviceId === 's0') toBusy++;
    expect(toBusy).toBe(0); // two distinct choices: s0 always loses to an idle one
    for (const attempt of busy) attempt.ended();
    expect(lb.load(ref('s0'))).toBe(0);
  });

  it('least-request keys on node + serviceId: the same ID on two nodes is two instances', () => {
    const lb = new LoadBalancer('least-request', prng(3));
    const twins = [ref('api', 'node-a'), ref('api', 'node-b')];
    const busy = Array.from({ length: 5 }, () => lb.started(twins[0]));
    for (let i = 0; i < 100; i++) expect(lb.pick('api', twins)?.node).toBe('node-b');
    for (const attempt of busy) attempt.ended();
  });

  it('p2c-ewma sends little to an instance answering 10× slower, and nothing lost on the others', () => {
    let now = 0;
    const lb = new LoadBalancer('p2c-ewma', prng(4), () => now);
    const three = instances(3);
    const picks = new Map<string, number>();
    // Sequential calls, each answered after its instance's latency: s0 takes 50 ms, others 5 ms.
    for (let i = 0; i < 3_000; i++) {
      const instance = lb.pick('orders', three)!;
      picks.set(instance.serviceId, (picks.get(instance.serviceId) ?? 0) + 1);
      const attempt = lb.started(instance);
      now += instance.serviceId === 's0' ? 50 : 5;
      attempt.responded();
      attempt.ended();
    }
    // Its cost decays while it is not picked, so it is probed now and then; round-robin: 1,000.
    expect(picks.get('s0')).toBeLessThan(100);
    expect(lb.load(ref('s0'))).toBe(0);
  });

  it('p2c-ewma weighs requests in flight: equal latency, the busier one loses', () => {
    let now = 0;
    const lb = new LoadBalancer('p2c-ewma', prng(5), () => now);
    const two = instances(2);
    for (const i of two) {
      const attempt = lb.started(i);
      now += 10;
      attempt.responded();
      attempt.ended();
    }
    const busy = [lb.started(ref('s1')), lb.started(ref('s1'))];
    for (let i = 0; i < 100; i++) expect(lb.pick('orders', two)?.serviceId).toBe('s0');
    for (const attempt of busy) attempt.ended();
  });

  it('no candidates → undefined; one → it', () => {
    const lb = new LoadBalancer('least-request');
    expect(lb.pick('x', [])).toBeUndefined();
    expect(lb.pick('x', instances(1))?.serviceId).toBe('s0');
  });
});

describe('PeakEwma', () => {
  it('a slower observation is the cost at once; a faster one is averaged in by elapsed time', () => {
    let now = 0;
    const ewma = new PeakEwma(() => now);
    ewma.observe('a', 10);
    ewma.observe('a', 100); // peak
    expect(ewma.cost('a', [])).toBe(100);
    now += EWMA_DECAY_MS;
    ewma.observe('a', 10);
    expect(ewma.cost('a', [])).toBeCloseTo(100 * Math.exp(-1) + 10 * (1 - Math.exp(-1)), 6);
  });

  it('decays toward 0 while nothing is observed (an instance left alone is tried again)', () => {
    let now = 0;
    const ewma = new PeakEwma(() => now);
    ewma.observe('a', 100);
    now += 2 * EWMA_DECAY_MS;
    expect(ewma.cost('a', [])).toBeCloseTo(100 * Math.exp(-2), 6);
  });

  it("a new key starts at the median of its peers' costs", () => {
    const ewma = new PeakEwma(() => 0);
    for (const [key, ms] of [
      ['a', 10],
      ['b', 40],
      ['c', 20],
    ] as const)
      ewma.observe(key, ms);
    expect(ewma.cost('new', ['a', 'b', 'c', 'new'])).toBe(20);
    expect(ewma.cost('other', ['a', 'b'])).toBe(25);
    expect(ewma.cost('alone', [])).toBe(0);
    ewma.retain(new Set(['a']));
    expect(ewma.cost('b', ['a'])).toBe(10); // forgotten: new again, at the median
  });
});

describe('OutlierEjection', () => {
  const policy = {
    consecutiveFailures: 5,
    baseEjectionMs: 30_000,
    maxEjectionMs: 300_000,
    maxEjectionPercent: 50,
  };

  it('ejects after N consecutive failures, for base × times ejected, capped', () => {
    let now = 0;
    const ejection = new OutlierEjection(policy, () => now);
    const four = instances(4);
    for (let i = 0; i < 4; i++) expect(ejection.failed(ref('s0'), four)).toBe(false);
    expect(ejection.failed(ref('s0'), four)).toBe(true);
    expect(ejection.eligible(four).map((i) => i.serviceId)).toEqual(['s1', 's2', 's3']);
    now = 30_001;
    expect(ejection.isEjected(ref('s0'))).toBe(false);
    expect(ejection.eligible(four)).toHaveLength(4); // re-admitted
    for (let i = 0; i < 5; i++) ejection.failed(ref('s0'), four);
    expect(ejection.eligible(four).map((i) => i.serviceId)).toEqual(['s1', 's2', 's3']);
    now += 59_999;
    expect(ejection.isEjected(ref('s0'))).toBe(true); // second time: 60 s
    now += 2;
    expect(ejection.isEjected(ref('s0'))).toBe(false);
  });

  it('forgets an instance that left every passing set: back, it starts afresh', () => {
    let now = 0;
    const ejection = new OutlierEjection(policy, () => now);
    const four = instances(4);
    for (let i = 0; i < 5; i++) ejection.failed(ref('s0'), four);
    expect(ejection.isEjected(ref('s0'))).toBe(true);
    ejection.retain(new Set(['s1', 's2', 's3'].map((id) => instanceKey(ref(id)))));
    expect(ejection.eligible(four)).toHaveLength(4);
    for (let i = 0; i < 5; i++) ejection.failed(ref('s0'), four);
    now = 30_001; // a first ejection again: base, not base × 2
    expect(ejection.isEjected(ref('s0'))).toBe(false);
  });

  it('a restart on a new port is a new life: not ejected for the old one, not charged with its attempts', () => {
    // The watch may never show the instance gone (its deregistration and new registration fall
    // between two answers), so nothing forgets the old life's record.
    const ejection = new OutlierEjection(policy, () => 0);
    const old = [1, 2, 3, 4].map((port, i) => ({ ...ref(`s${i}`), address: '127.0.0.1', port }));
    for (let i = 0; i < 5; i++) ejection.failed(old[0], old);
    expect(ejection.isEjected(old[0])).toBe(true);
    const restarted = { ...old[0], port: 9 };
    const now = [restarted, ...old.slice(1)];
    expect(ejection.eligible(now)).toHaveLength(4);
    // Attempts still in flight to the old port fail after the watch shows the new one.
    for (let i = 0; i < 5; i++) expect(ejection.failed(old[0], now)).toBe(false);
    expect(ejection.eligible(now)).toHaveLength(4);
    // The new life's own failures count from zero.
    for (let i = 0; i < 4; i++) expect(ejection.failed(restarted, now)).toBe(false);
    expect(ejection.failed(restarted, now)).toBe(true);
  });

  it('the same serviceId on two nodes: ejecting one leaves the other', () => {
    const ejection = new OutlierEjection(policy, () => 0);
    const twins = [ref('api', 'node-a'), ref('api', 'node-b')];
    for (let i = 0; i < 5; i++) ejection.failed(twins[0], twins);
    expect(ejection.eligible(twins)).toEqual([twins[1]]);
  });

  it('the multiplier falls by one per baseEjectionMs spent un-ejected (a daily blip stays 30 s)', () => {
    let now = 0;
    const ejection = new OutlierEjection(policy, () => now);
    const four = instances(4);
    const ejectedFor = (): number => {
      for (let i = 0; i < 5; i++) ejection.failed(ref('s0'), four);
      const start = now;
      while (ejection.isEjected(ref('s0'), now)) now += 1_000;
      return now - start;
    };
    for (let day = 0; day < 10; day++) {
      expect(ejectedFor()).toBe(30_000);
      now += 86_400_000;
    }
    // Back to back: 30 s, 60 s, 90 s; then 31 s un-ejected takes one step off (90 s, not 120 s).
    const burst = [ejectedFor(), ejectedFor(), ejectedFor()];
    now += 31_000;
    expect([...burst, ejectedFor()]).toEqual([30_000, 60_000, 90_000, 90_000]);
  });

  it('failures of an instance no longer passing do not count (it may come back, restarted)', () => {
    const ejection = new OutlierEjection(policy, () => 0);
    const others = [ref('s1'), ref('s2')];
    for (let i = 0; i < 10; i++) expect(ejection.failed(ref('s0'), others)).toBe(false);
    expect(ejection.isEjected(ref('s0'))).toBe(false);
  });

  it('a success resets the count', () => {
    const ejection = new OutlierEjection(policy, () => 0);
    const two = instances(2);
    for (let i = 0; i < 4; i++) ejection.failed(ref('s0'), two);
    ejection.succeeded(ref('s0'));
    for (let i = 0; i < 4; i++) expect(ejection.failed(ref('s0'), two)).toBe(false);
  });

  it('ejects at most maxEjectionPercent (at least one) and uses all when too few are eligible', () => {
    const ejection = new OutlierEjection(policy, () => 0);
    const three = instances(3);
    const fail = (id: string): boolean => {
      let ejected = false;
      for (let i = 0; i < 5; i++) ejected = ejection.failed(ref(id), three) || ejected;
      return ejected;
    };
    expect(fail('s0')).toBe(true); // max(1, floor(3 × 50%)) = 1
    expect(fail('s1')).toBe(false);
    expect(ejection.eligible(three)).toHaveLength(2);
    const two = instances(2);
    const small = new OutlierEjection({ ...policy, maxEjectionPercent: 100 }, () => 0);
    for (const id of ['s0', 's1']) for (let i = 0; i < 5; i++) small.failed(ref(id), two);
    expect(small.eligible(two)).toHaveLength(2); // none eligible → all passing
  });
});

describe('RetryBudget', () => {
  it('allows budgetPercent of the requests plus minPerSecond over a sliding 10 s window', () => {
    let now = 0;
    const budget = new RetryBudget(20, 1, () => now);
    for (let i = 0; i < 100; i++) budget.request();
    let allowed = 0;
    while (budget.tryRetry()) allowed++;
    expect(allowed).toBe(20 + 10);
    now = 10_500; // the window has moved past all of it
    expect(budget.tryRetry()).toBe(true);
  });

  it('reads the clock once per 64 requests; fewer than 64 requests leave the window early', () => {
    let now = 0;
    let reads = 0;
    const budget = new RetryBudget(100, 0, () => (reads++, now));
    reads = 0;
    for (let i = 0; i < 6_400; i++) budget.request();
    expect(reads).toBe(100);
    // 63 requests at 9.9 s and no read: they count in the last read's bucket (0 s)…
    now = 9_900;
    for (let i = 0; i < 63; i++) budget.request();
    // …so the read at 10.5 s (the 64th request since) drops them with the 6,400 of 0 s.
    now = 10_500;
    budget.request();
    let allowed = 0;
    while (budget.tryRetry()) allowed++;
    expect(allowed).toBe(1); // 64 were sent within the last 10 s
  });
});

describe('retry rules', () => {
  it.each([
    ['GET', 'maybe-sent', undefined, true],
    ['PUT', 'status', undefined, true],
    ['DELETE', 'maybe-sent', undefined, true],
    ['POST', 'not-sent', undefined, true],
    ['POST', 'maybe-sent', undefined, false],
    ['PATCH', 'status', undefined, false],
    ['POST', 'maybe-sent', true, true],
    ['post', 'not-sent', false, true],
  ] as const)('%s after %s (idempotent: %s) → %s', (method, failure, idempotent, expected) => {
    expect(mayRetry(method, failure, idempotent)).toBe(expected);
  });

  it.each([
    ['ECONNREFUSED', true, 'not-sent'],
    ['UND_ERR_CONNECT_TIMEOUT', false, 'not-sent'],
    ['ENETUNREACH', false, 'not-sent'],
    ['EHOSTUNREACH', true, 'not-sent'],
    ['EADDRNOTAVAIL', false, 'not-sent'],
    ['ENOTFOUND', false, 'not-sent'],
    ['EAI_AGAIN', false, 'not-sent'],
    ['ERR_SSL_WRONG_VERSION_NUMBER', false, 'not-sent'],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', false, 'not-sent'],
    ['ECONNRESET', false, 'not-sent'],
    ['ECONNRESET', true, 'maybe-sent'],
    ['UND_ERR_SOCKET', true, 'maybe-sent'],
    ['UND_ERR_INVALID_ARG', false, undefined],
    ['UND_ERR_DESTROYED', true, undefined],
    [undefined, false, undefined],
  ] as const)('transportFailure(%s, connected: %s) → %s', (code, connected, expected) => {
    // Stubbed errors: a real agent cannot produce DNS or routing failures on loopback on demand.
    expect(transportFailure(Object.assign(new Error('x'), { code }), connected)).toBe(expected);
  });

  it.each([
    ['orders', true],
    ['orders-v2', true],
    ['localhost', false],
    ['LOCALHOST', false],
    ['example.com', false],
    ['127.0.0.1', false],
    ['[::1]', false],
    ['-bad', false],
  ])('isServiceHost(%s) → %s', (host, expected) => {
    expect(isServiceHost(host)).toBe(expected);
  });
});

describe('asLegacy', () => {
  const raw = (pairs: [string, string][]): Buffer[] =>
    pairs.flatMap(([k, v]) => [Buffer.from(k), Buffer.from(v)]);

  it('a handler with the legacy methods is used as is', () => {
    const handler = {
      onConnect: () => undefined,
      onHeaders: () => true,
      onData: () => true,
      onComplete: () => undefined,
      onError: () => undefined,
    };
    expect(asLegacy(handler)).toBe(handler);
  });

  it('a newer-API handler gets parsed headers, and pause/resume/abort through its controller', () => {
    const seen: unknown[][] = [];
    let controller!: Dispatcher.DispatchController;
    const view = asLegacy({
      onRequestStart: (c) => (controller = c),
      onResponseStart: (c, status, headers) => (seen.push([status, headers]), c.pause()),
      onResponseData: (_c, chunk) => seen.push([chunk.toString()]),
      onResponseEnd: (_c, trailers) => seen.push(['end', trailers]),
      onResponseError: (_c, error) => seen.push(['error', error.message]),
    });
    const aborted: unknown[] = [];
    let resumed = 0;
    view.onConnect((reason) => aborted.push(reason?.message));
    const headers = raw([
      ['Content-Type', 'text/plain'],
      ['set-cookie', 'a=1'],
      ['set-cookie', 'b=2'],
    ]);
    expect(view.onHeaders(200, headers, () => resumed++, 'OK')).toBe(false);
    expect(controller.paused).toBe(true);
    controller.resume();
    expect([resumed, controller.paused]).toEqual([1, false]);
    expect(view.onData(Buffer.from('body'))).toBe(true);
    view.onComplete(raw([['x-trailer', 't']]));
    view.onError(new Error('late'));
    controller.abort(new Error('stop'));
    controller.abort(new Error('again'));
    expect(seen).toEqual([
      [200, { 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] }],
      ['body'],
      ['end', { 'x-trailer': 't' }],
      ['error', 'late'],
    ]);
    expect([aborted, controller.aborted, controller.reason?.message]).toEqual([
      ['stop'],
      true,
      'stop',
    ]);
  });
});
