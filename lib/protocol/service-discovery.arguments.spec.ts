import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { checkDiscoverQuery, readRegistration } from './service-discovery.arguments.js';

const valid = { name: 'orders', serviceId: 'orders-1', port: 3000 };

function pathsOf(work: () => unknown): string[] {
  try {
    work();
  } catch (error) {
    if (error instanceof DiscoverySettingsError) return error.paths;
    throw error;
  }
  throw new Error('expected a DiscoverySettingsError');
}

describe('readRegistration', () => {
  it('fills tags, meta and the check defaults, with the period in ms', () => {
    const args = readRegistration({ ...valid, healthCheck: { http: 'http://127.0.0.1:1/h' } });
    expect(args).toMatchObject({ tags: [], meta: {} });
    expect(args.healthCheck).toMatchObject({ interval: '10s', timeout: '5s', intervalMs: 10_000 });
    expect(readRegistration({ ...valid, healthCheck: { ttl: '2s' } }).healthCheck).toMatchObject({
      ttlMs: 2_000,
    });
  });

  it('rejects unknown keys, Object.prototype names included', () => {
    const raw = JSON.parse('{"constructor": 1}') as Record<string, unknown>;
    expect(pathsOf(() => readRegistration({ ...valid, ...raw }))).toEqual([
      'registration.constructor',
    ]);
    const check = { ttl: '1s', ttlMs: 1 };
    expect(pathsOf(() => readRegistration({ ...valid, healthCheck: check }))).toEqual([
      'registration.healthCheck.ttlMs',
    ]);
  });
});

describe('checkDiscoverQuery', () => {
  it('names the bad query field', () => {
    expect(pathsOf(() => checkDiscoverQuery('orders', { datacenter: 5 }))).toEqual([
      'query.datacenter',
    ]);
  });
});
