import { describe, expect, it } from '@jest/globals';
import { Lease } from './lease.state.js';

const MS = 9_000;

describe('Lease', () => {
  it('starts lapsed; a pass within the lease makes it fresh', () => {
    const lease = new Lease(MS);
    expect(lease.state).toBe('lapsed');
    expect(lease.isFresh(0)).toBe(false);
    expect(lease.pass(100, 150)).toEqual({ lapsed: false, freshened: true });
    expect(lease.isFresh(100 + MS - 1)).toBe(true);
    expect(lease.isFresh(100 + MS)).toBe(false);
    expect(lease.endsAt).toBe(100 + MS);
  });

  it('a pass seen only after its lease ran out does not make it fresh', () => {
    const lease = new Lease(MS);
    expect(lease.pass(0, MS)).toEqual({ lapsed: false, freshened: false });
    expect(lease.state).toBe('lapsed');
  });

  it('a pass while fresh carries it on in the same epoch', () => {
    const lease = new Lease(MS);
    lease.pass(0, 0);
    const epoch = lease.epoch;
    expect(lease.pass(MS - 1, MS - 1)).toEqual({ lapsed: false, freshened: false });
    expect(lease.isFresh(2 * MS - 2)).toBe(true);
    expect(lease.epoch).toBe(epoch);
  });

  it('a pass that comes after a fresh lease ran out lapses it first (new epoch), then freshens', () => {
    const lease = new Lease(MS);
    lease.pass(0, 0);
    const epoch = lease.epoch;
    expect(lease.pass(MS + 5, MS + 5)).toEqual({ lapsed: true, freshened: true });
    expect(lease.epoch).toBe(epoch + 1);
    expect(lease.state).toBe('fresh');
  });

  it('expire lapses a lease that ran out, and only then', () => {
    const lease = new Lease(MS);
    lease.pass(0, 0);
    expect(lease.expire(MS - 1)).toBe(false);
    expect(lease.expire(MS)).toBe(true);
    expect(lease.state).toBe('lapsed');
    expect(lease.expire(MS + 1)).toBe(false);
    expect(lease.endsAt).toBeUndefined();
  });

  it('lose lapses it at once with a new epoch', () => {
    const lease = new Lease(MS);
    lease.pass(0, 0);
    const epoch = lease.epoch;
    expect(lease.lose()).toBe(true);
    expect(lease.state).toBe('lapsed');
    expect(lease.epoch).toBe(epoch + 1);
  });

  it('withdrawn ignores passes until restored; restore is fresh when the last pass is', () => {
    const lease = new Lease(MS);
    lease.pass(0, 0);
    expect(lease.withdraw()).toBe(true);
    expect(lease.state).toBe('withdrawn');
    expect(lease.pass(10, 10)).toEqual({ lapsed: false, freshened: false });
    expect(lease.isFresh(20)).toBe(false);
    expect(lease.lose()).toBe(false);
    expect(lease.state).toBe('withdrawn');
    expect(lease.restore(20)).toBe(true);
    expect(lease.isFresh(20)).toBe(true);
    expect(lease.restore(30)).toBe(false);
  });

  it('restore long after the last pass leaves it lapsed until the next pass', () => {
    const lease = new Lease(MS);
    lease.pass(0, 0);
    lease.withdraw();
    expect(lease.restore(MS * 2)).toBe(false);
    expect(lease.state).toBe('lapsed');
  });
});
