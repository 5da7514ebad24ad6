import * as api from './index.js';

// The public API is exactly what lib/index.ts exports: a name added or lost here is a change
// users see (README "API").
describe('public API', () => {
  it('exports exactly these runtime names', () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        'CONSUL_CLIENT',
        'ConsulClient',
        'ConsulDiscoveryProvider',
        'ConsulResponseError',
        'DISCOVERY_PROVIDER',
        'DISCOVERY_SETTINGS',
        'DiscoveryError',
        'DiscoveryHttpClient',
        'DiscoveryModule',
        'DiscoveryService',
        'DiscoverySettings',
        'DiscoverySettingsError',
        'DiscoveryTimeoutError',
        'DiscoveryUnavailableError',
        'NoInstanceError',
        'ShardingService',
      ].sort(),
    );
  });

  it('errors form one hierarchy under DiscoveryError', () => {
    expect(new api.DiscoveryTimeoutError('x', 1)).toBeInstanceOf(api.DiscoveryUnavailableError);
    for (const error of [
      new api.DiscoverySettingsError([]),
      new api.DiscoveryUnavailableError('x'),
      new api.ConsulResponseError('x', 500, 'y'),
      new api.NoInstanceError('orders'),
    ]) {
      expect(error).toBeInstanceOf(api.DiscoveryError);
      expect(error).toBeInstanceOf(Error);
    }
  });
});
