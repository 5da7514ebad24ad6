import { describe, expect, it } from '@jest/globals';
import { CooperativeHandoff } from './cooperative-handoff.js';

// The cooperative handoff's transition table (docs/ARCHITECTURE.md), one row at a time.
describe('CooperativeHandoff', () => {
  it('free → waiting on a table that gives it; waiting → running when its batch elapses', () => {
    const h = new CooperativeHandoff();
    const step = h.table([3, 1]);
    expect(step).toEqual({ released: [], batch: 1 });
    expect(h.owned()).toEqual([]);
    expect(h.elapsed(1)).toEqual([1, 3]);
    expect(h.owned()).toEqual([1, 3]);
    expect(h.running(3)).toBe(true);
  });

  it('a table giving the same partitions again opens no batch: the first delay keeps counting', () => {
    const h = new CooperativeHandoff();
    expect(h.table([1, 2]).batch).toBe(1);
    expect(h.table([1, 2])).toEqual({ released: [] });
    expect(h.table([2, 1, 5])).toEqual({ released: [], batch: 2 });
    expect(h.elapsed(1)).toEqual([1, 2]);
    expect(h.owned()).toEqual([1, 2]);
    expect(h.elapsed(2)).toEqual([5]);
  });

  it('waiting → free when taken away: its batch no longer starts it, nor does the batch of an earlier table', () => {
    const h = new CooperativeHandoff();
    h.table([1, 2]); // batch 1
    h.table([2]); // 1 is free again
    h.table([1, 2]); // 1 waits again, in batch 2
    expect(h.elapsed(1)).toEqual([2]);
    expect(h.running(1)).toBe(false);
    expect(h.elapsed(2)).toEqual([1]);
  });

  it('running → free when taken away (released); running stays running when given again', () => {
    const h = new CooperativeHandoff();
    h.table([1, 2]);
    h.elapsed(1);
    expect(h.table([2, 1])).toEqual({ released: [] });
    expect(h.table([2])).toEqual({ released: [1] });
    expect(h.owned()).toEqual([2]);
    expect(h.elapsed(1)).toEqual([]);
  });

  it('stop() frees everything and returns what was running; a batch elapsing later starts nothing', () => {
    const h = new CooperativeHandoff();
    h.table([1]);
    h.elapsed(1);
    h.table([1, 4]); // 4 waits in batch 2
    expect(h.stop()).toEqual([1]);
    expect(h.elapsed(2)).toEqual([]);
    expect(h.owned()).toEqual([]);
  });
});
