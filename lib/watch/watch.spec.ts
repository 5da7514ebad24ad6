import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { freezeInstances, sameInstances } from './instance-set.js';
import { nextIndex } from './blocking-query.loop.js';
import { watchKey } from './watch-key.js';
import { LOCAL_DATACENTER } from '../consul/consul.client.js';

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
