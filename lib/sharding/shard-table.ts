import { murmur3 } from './murmur3.js';

/** One instance as the table sees it. */
export interface ShardMember {
  readonly serviceId: string;
  /** Capacity, an integer ≥ 1. */
  readonly weight: number;
}

export interface ShardTableOptions {
  /** P, an integer ≥ 1. */
  readonly partitions: number;
  /** 1 = floor or ceiling of each quota; > 1 = at most ceil(balanceFactor × quota). */
  readonly balanceFactor: number;
}

const utf8 = new TextEncoder();

/**
 * Bounded-load rendezvous hashing, computed the same way everywhere from the member set alone
 * (README "Sharding" gives the definition so another language can compute it too):
 * - score(p, s) = murmur3_x86_32(UTF-8 bytes of s.serviceId, seed = p), unsigned;
 * - quota(s) = P × weight(s) / Σ weights;
 * - all (p, s) pairs are walked by score descending, then serviceId ascending, then p ascending,
 *   and p goes to s when p has no owner yet and s may take one more: at balanceFactor 1, s holds
 *   fewer than floor(quota), or fewer than ceil(quota) while spare slots (P − Σ floor(quota))
 *   remain, each instance going above its floor using one; above 1, s holds fewer than
 *   ceil(balanceFactor × quota).
 */
export class ShardTable {
  /** serviceIds, ascending: the member set the table was computed from. */
  readonly members: readonly string[];
  readonly partitions: number;
  /** Member index per partition (-1 only when there are no members). */
  private readonly owners: Int32Array;
  /** score(p, s) at p × n + s. */
  private readonly scores: Uint32Array;

  constructor(members: readonly ShardMember[], { partitions, balanceFactor }: ShardTableOptions) {
    const sorted = [...members].sort((a, b) => compareIds(a.serviceId, b.serviceId));
    this.members = sorted.map((m) => m.serviceId);
    this.partitions = partitions;
    const n = sorted.length;
    this.scores = new Uint32Array(partitions * n);
    for (let s = 0; s < n; s++) {
      const bytes = utf8.encode(sorted[s].serviceId);
      for (let p = 0; p < partitions; p++) this.scores[p * n + s] = murmur3(bytes, p);
    }
    this.owners = new Int32Array(partitions).fill(-1);
    if (n > 0) this.assign(capacities(sorted, partitions, balanceFactor));
  }

  /** The owner of partition p, or `undefined` without members. */
  ownerOf(partition: number): string | undefined {
    const owner = this.owners[partition];
    return owner === undefined || owner < 0 ? undefined : this.members[owner];
  }

  /** The partitions `serviceId` owns, ascending. */
  owned(serviceId: string): number[] {
    const index = this.members.indexOf(serviceId);
    const out: number[] = [];
    if (index < 0) return out;
    for (let p = 0; p < this.partitions; p++) if (this.owners[p] === index) out.push(p);
    return out;
  }

  /** Every member by descending score for partition p (ties: serviceId ascending). */
  ranked(partition: number): string[] {
    const n = this.members.length;
    const order = Array.from({ length: n }, (_, s) => s);
    order.sort((a, b) => this.scores[partition * n + b] - this.scores[partition * n + a] || a - b);
    return order.map((s) => this.members[s]);
  }

  /**
   * The walk, without sorting all P × n pairs: each partition offers its best remaining
   * member, and a heap orders the partitions' offers exactly as the global pair order would.
   */
  private assign(capacity: Capacity): void {
    const n = this.members.length;
    const P = this.partitions;
    // The current offer of p: a member index, found by scanning below the previous offer.
    const offer = new Int32Array(P);
    for (let p = 0; p < P; p++) offer[p] = this.nextOffer(p, -1);
    const before = (a: number, b: number): boolean => {
      const sa = this.scores[a * n + offer[a]];
      const sb = this.scores[b * n + offer[b]];
      if (sa !== sb) return sa > sb;
      if (offer[a] !== offer[b]) return offer[a] < offer[b];
      return a < b;
    };
    const heap = new PartitionHeap(P, before);
    for (let p = 0; p < P; p++) heap.push(p);
    while (heap.size > 0) {
      const p = heap.peek();
      const s = offer[p];
      if (capacity.mayTake(s)) {
        capacity.take(s);
        this.owners[p] = s;
        heap.pop();
      } else {
        offer[p] = this.nextOffer(p, s);
        // Unreachable: the capacities add up to at least P, so some member always has room.
        if (offer[p] < 0) heap.pop();
        else heap.replaceTop();
      }
    }
  }

  /** The member after `after` in p's order (score descending, index ascending); -1 = first. */
  private nextOffer(p: number, after: number): number {
    const n = this.members.length;
    const row = p * n;
    const limitScore = after < 0 ? Infinity : this.scores[row + after];
    let best = -1;
    for (let s = 0; s < n; s++) {
      const score = this.scores[row + s];
      const belowLimit = score < limitScore || (score === limitScore && s > after);
      if (!belowLimit) continue;
      if (best < 0 || score > this.scores[row + best]) best = s;
    }
    return best;
  }
}

interface Capacity {
  mayTake(member: number): boolean;
  take(member: number): void;
}

/** How many partitions each member (sorted order) may take, per the rules above. */
function capacities(
  members: readonly ShardMember[],
  partitions: number,
  balanceFactor: number,
): Capacity {
  const total = members.reduce((sum, m) => sum + m.weight, 0);
  const held = new Int32Array(members.length);
  if (balanceFactor > 1) {
    const caps = members.map((m) => Math.ceil(balanceFactor * ((partitions * m.weight) / total)));
    return {
      mayTake: (s) => held[s] < caps[s],
      take: (s) => held[s]++,
    };
  }
  // Integer arithmetic: P × weight stays far below 2^53.
  const floors = members.map((m) => Math.floor((partitions * m.weight) / total));
  const ceils = members.map((m, s) =>
    (partitions * m.weight) % total === 0 ? floors[s] : floors[s] + 1,
  );
  let spare = partitions - floors.reduce((sum, f) => sum + f, 0);
  return {
    mayTake: (s) => held[s] < floors[s] || (held[s] < ceils[s] && spare > 0),
    take: (s) => {
      held[s]++;
      if (held[s] > floors[s]) spare--;
    },
  };
}

/** serviceIds compare by UTF-16 code units, as JavaScript sorts strings (ASCII ids by bytes). */
function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A binary min-heap of partition numbers under `before`. */
class PartitionHeap {
  private readonly items: Int32Array;
  size = 0;

  constructor(
    capacity: number,
    private readonly before: (a: number, b: number) => boolean,
  ) {
    this.items = new Int32Array(capacity);
  }

  peek(): number {
    return this.items[0];
  }

  push(item: number): void {
    let i = this.size++;
    this.items[i] = item;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(this.items[i], this.items[parent])) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): void {
    this.items[0] = this.items[--this.size];
    this.siftDown();
  }

  /** The top's key changed (it can only move later in the order). */
  replaceTop(): void {
    this.siftDown();
  }

  private siftDown(): void {
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let first = i;
      if (left < this.size && this.before(this.items[left], this.items[first])) first = left;
      if (right < this.size && this.before(this.items[right], this.items[first])) first = right;
      if (first === i) return;
      this.swap(i, first);
      i = first;
    }
  }

  private swap(a: number, b: number): void {
    const t = this.items[a];
    this.items[a] = this.items[b];
    this.items[b] = t;
  }
}
