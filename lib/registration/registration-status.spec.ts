import { describe, expect, it } from '@jest/globals';
import { selfStatus, type SelfStatusInput } from './registration-status.js';

const TTL_MS = 3_000;
const base: SelfStatusInput = {
  serviceId: 'orders-1',
  state: 'registered',
  held: true,
  lastPassAt: 10_000,
  ttlMs: TTL_MS,
  now: 11_000,
};

describe('selfStatus', () => {
  it('passing: registered, held by the agent, last pass younger than the TTL', () => {
    expect(selfStatus(base)).toEqual({
      serviceId: 'orders-1',
      state: 'registered',
      held: true,
      lastPassAgoMs: 1_000,
      passing: true,
    });
  });

  it('not passing once the last pass is a TTL old (Consul turns the check critical then)', () => {
    expect(selfStatus({ ...base, now: 10_000 + TTL_MS - 1 }).passing).toBe(true);
    expect(selfStatus({ ...base, now: 10_000 + TTL_MS })).toMatchObject({
      lastPassAgoMs: TTL_MS,
      passing: false,
    });
  });

  it("not passing in maintenance mode or with any check of it or its node not passing: Consul's view", () => {
    const check = (checkId: string, serviceId: string, status: string) => ({
      checkId,
      serviceId,
      status,
    });
    const checks = [
      check('service:orders-1', 'orders-1', 'passing'),
      check('service:other-1', 'other-1', 'critical'),
      check('serfHealth', '', 'passing'),
    ];
    expect(selfStatus({ ...base, checks }).passing).toBe(true);
    const maintenance = check('_service_maintenance:orders-1', 'orders-1', 'critical');
    expect(selfStatus({ ...base, checks: [...checks, maintenance] })).toMatchObject({
      failingChecks: { '_service_maintenance:orders-1': 'critical' },
      passing: false,
    });
    const node = check('_node_maintenance', '', 'critical');
    expect(selfStatus({ ...base, checks: [...checks, node] }).passing).toBe(false);
    const ttlExpired = check('service:orders-1', 'orders-1', 'critical');
    expect(selfStatus({ ...base, checks: [ttlExpired] }).passing).toBe(false);
    // An HTTP/TCP check of its own may probe the very endpoint that asks: not consulted.
    const http = { ...base, ttlMs: undefined };
    expect(selfStatus({ ...http, checks: [ttlExpired] }).passing).toBe(true);
    expect(selfStatus({ ...http, checks: [ttlExpired, maintenance] }).passing).toBe(false);
  });

  it('not passing when the agent no longer holds it (restarted empty)', () => {
    expect(selfStatus({ ...base, held: false })).toMatchObject({
      held: false,
      passing: false,
    });
  });

  it('held unknown and not passing when the agent read failed', () => {
    const status = selfStatus({ ...base, held: undefined });
    expect(status).not.toHaveProperty('held');
    expect(status.passing).toBe(false);
  });

  it.each(['idle', 'registering', 'deregistering', 'deregistered', 'stopped'] as const)(
    'not passing while %s',
    (state) => {
      expect(selfStatus({ ...base, state }).passing).toBe(false);
    },
  );

  it('no pass yet: no age, not passing', () => {
    const status = selfStatus({ ...base, lastPassAt: undefined });
    expect(status).not.toHaveProperty('lastPassAgoMs');
    expect(status.passing).toBe(false);
  });

  it('HTTP/TCP check: registered and held is passing; no pass age (Consul runs the check)', () => {
    const status = selfStatus({ ...base, ttlMs: undefined, now: 10_000 + 10 * TTL_MS });
    expect(status).toEqual({
      serviceId: 'orders-1',
      state: 'registered',
      held: true,
      passing: true,
    });
  });
});
