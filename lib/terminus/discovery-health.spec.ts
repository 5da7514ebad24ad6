import { describe, expect, it } from '@jest/globals';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import type { DiscoveryStatus } from '../registration/registration-status.js';
import { checkHealthArguments } from './discovery-health.arguments.js';
import { healthReport, type HealthReportInput } from './discovery-health.report.js';

const NOW = Date.parse('2026-12-02T04:00:00.000Z');
const passing: DiscoveryStatus = {
  agent: { ok: true },
  self: {
    serviceId: 'orders-1',
    state: 'registered',
    held: true,
    lastPassAgoMs: 300,
    passing: true,
  },
};
const base: HealthReportInput = { status: passing, requireRegistered: true, watches: [], now: NOW };

function thrown(run: () => unknown): DiscoverySettingsError {
  try {
    run();
  } catch (error) {
    if (error instanceof DiscoverySettingsError) return error;
    throw error;
  }
  throw new Error('expected a DiscoverySettingsError');
}

describe('isHealthy arguments', () => {
  it('defaults: requireRegistered true, no maxStaleMs', () => {
    expect(checkHealthArguments('discovery', {})).toEqual({
      key: 'discovery',
      requireRegistered: true,
    });
    expect(checkHealthArguments('consul', { requireRegistered: false, maxStaleMs: 0 })).toEqual({
      key: 'consul',
      requireRegistered: false,
      maxStaleMs: 0,
    });
  });

  it.each([
    ['', {}, 'key', 'key must be a non-empty string'],
    [42, {}, 'key', 'key must be a non-empty string'],
    ['d', null, 'options', 'options must be an object'],
    ['d', { maxStaleMs: -1 }, 'maxStaleMs', 'maxStaleMs must be an integer from 0'],
    ['d', { maxStaleMs: 1.5 }, 'maxStaleMs', 'maxStaleMs must be an integer from 0'],
    ['d', { maxStaleMs: '5000' }, 'maxStaleMs', 'maxStaleMs must be an integer from 0'],
    ['d', { requireRegistered: 'yes' }, 'requireRegistered', 'requireRegistered must be a boolean'],
    ['d', { maxStale: 5 }, 'maxStale', 'maxStale is not an option of isHealthy'],
  ])('%j, %j → names %s', (key, options, path, message) => {
    const error = thrown(() => checkHealthArguments(key, options));
    expect(error.paths).toEqual([path]);
    expect(error.message).toContain(message);
    expect(error.message).toContain('DiscoveryHealthIndicator.isHealthy arguments');
  });

  it('lists every bad argument at once', () => {
    expect(thrown(() => checkHealthArguments('', { maxStaleMs: -1 })).paths).toEqual([
      'key',
      'maxStaleMs',
    ]);
  });
});

describe('healthReport', () => {
  it('up: agent answers, self registered and passing; no reasons', () => {
    expect(healthReport(base)).toEqual({
      up: true,
      details: { agent: { ok: true }, self: passing.self },
    });
  });

  it('down when the agent does not answer, with its error', () => {
    const status: DiscoveryStatus = {
      agent: { ok: false, error: 'Consul agent.services failed: agent at … unreachable' },
      self: { serviceId: 'orders-1', state: 'registered', lastPassAgoMs: 300, passing: false },
    };
    const { up, details } = healthReport({ ...base, status });
    expect(up).toBe(false);
    expect(details.agent).toEqual(status.agent);
    expect(details.reasons).toEqual([
      'Consul agent.services failed: agent at … unreachable',
      '"orders-1" cannot be confirmed: the agent read failed',
    ]);
  });

  it('down when self is deregistered, lost by the agent, or its TTL lapsed', () => {
    const self = passing.self!;
    const reasonOf = (s: typeof self): string[] | undefined =>
      healthReport({ ...base, status: { agent: { ok: true }, self: s } }).details.reasons;
    expect(reasonOf({ ...self, state: 'deregistered', passing: false })).toEqual([
      '"orders-1" is deregistered, not registered',
    ]);
    expect(reasonOf({ ...self, held: false, passing: false })).toEqual([
      '"orders-1" is not held by the agent (restarted?)',
    ]);
    expect(reasonOf({ ...self, lastPassAgoMs: 4_000, passing: false })).toEqual([
      '"orders-1" last passed its TTL check 4000 ms ago',
    ]);
    const failingChecks = { '_service_maintenance:orders-1': 'critical' };
    expect(reasonOf({ ...self, failingChecks, passing: false })).toEqual([
      '"orders-1" is not passing in Consul: _service_maintenance:orders-1 critical',
    ]);
  });

  it('requireRegistered: false ignores the registration, still reports it', () => {
    const status: DiscoveryStatus = {
      agent: { ok: true },
      self: { serviceId: 'orders-1', state: 'idle', held: false, passing: false },
    };
    expect(healthReport({ ...base, status, requireRegistered: false })).toEqual({
      up: true,
      details: status,
    });
  });

  it('no service configured: the agent alone decides', () => {
    expect(healthReport({ ...base, status: { agent: { ok: true } } })).toEqual({
      up: true,
      details: { agent: { ok: true } },
    });
  });

  describe('watches', () => {
    const watches: HealthReportInput['watches'] = [
      { name: 'fresh', freshness: { updatedAt: new Date(NOW - 50_000), stale: false } },
      { name: 'stale', freshness: { updatedAt: new Date(NOW - 2_000), stale: true } },
      { name: 'unknown', freshness: undefined },
    ];

    it('reported, never judged without maxStaleMs', () => {
      const { up, details } = healthReport({ ...base, watches });
      expect(up).toBe(true);
      expect(details.watches).toEqual({
        fresh: { known: true, updatedAt: '2026-12-02T03:59:10.000Z', ageMs: 50_000, stale: false },
        stale: { known: true, updatedAt: '2026-12-02T03:59:58.000Z', ageMs: 2_000, stale: true },
        unknown: { known: false },
      });
    });

    it('maxStaleMs: down for a stale set older than it and for an unknown one; an open long-poll is current however old', () => {
      const { up, details } = healthReport({ ...base, watches, maxStaleMs: 1_000 });
      expect(up).toBe(false);
      expect(details.reasons).toEqual([
        'watch of "stale" is stale: last confirmed 2000 ms ago (maxStaleMs 1000)',
        'watch of "unknown" has no set yet',
      ]);
    });

    it('maxStaleMs: a stale set younger than it is tolerated', () => {
      const { up } = healthReport({ ...base, watches: watches.slice(0, 2), maxStaleMs: 2_000 });
      expect(up).toBe(true);
    });
  });

  it('sharding: the owned partition count, when configured', () => {
    expect(healthReport({ ...base, owned: 0 }).details.sharding).toEqual({ owned: 0 });
    expect(healthReport(base).details).not.toHaveProperty('sharding');
  });
});
