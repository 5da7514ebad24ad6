import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';

/**
 * Frozen instances, so every subscriber can share them; the array stays unfrozen because V8
 * copies a frozen array many times slower, and callers get copies of it.
 */
export function freezeInstances(instances: ServiceInstance[]): readonly ServiceInstance[] {
  for (const instance of instances) {
    Object.freeze(instance.tags);
    Object.freeze(instance.meta);
    Object.freeze(instance);
  }
  return instances;
}

/** Deep equality of two sorted instance sets, so unchanged answers are not emitted again. */
export function sameInstances(
  a: readonly ServiceInstance[],
  b: readonly ServiceInstance[],
): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => fingerprint(x) === fingerprint(b[i]));
}

function fingerprint(i: ServiceInstance): string {
  const meta = Object.keys(i.meta)
    .sort()
    .map((k) => [k, i.meta[k]]);
  return JSON.stringify([
    i.serviceId,
    i.name,
    i.address,
    i.port,
    i.tags,
    meta,
    i.node,
    i.datacenter,
  ]);
}
