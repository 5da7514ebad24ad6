import { IsNotEmpty, IsOptional, IsString } from 'class-validator';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { IsDatacenter, IsServiceName } from '../protocol/field.rules.js';
import { isPlainObject, ViolationCollector } from '../protocol/input.reader.js';
import { readRegistration } from '../protocol/service-discovery.arguments.js';
import type {
  ServiceInstance,
  ServiceRegistration,
} from '../protocol/service-discovery.protocol.js';
import { IN_MEMORY_DATACENTER, IN_MEMORY_NODE } from './in-memory.catalog.js';
import { IN_MEMORY_ADDRESS } from './in-memory.transport.js';

/** An instance as a test declares it: the name comes from where it is listed. */
export type InMemoryInstance = { serviceId: string; port: number } & Partial<ServiceInstance>;

/** The name the instances are listed under. */
class ListName {
  @IsServiceName()
  name: string;
}

/** What an instance has beyond a registration's fields (those are read by `readRegistration`). */
class InstanceExtras {
  @IsOptional()
  @IsString()
  @IsNotEmpty()
  node?: string;

  @IsOptional()
  @IsDatacenter()
  datacenter?: string;
}

class LocalDatacenter {
  @IsOptional()
  @IsDatacenter()
  datacenter?: string;
}

/** The double's own datacenter (`forRoot({ datacenter })`), validated as `consul.datacenter` is. */
export function readLocalDatacenter(datacenter: unknown, subject: string): string {
  const out = new ViolationCollector();
  out.validate(Object.assign(new LocalDatacenter(), { datacenter }), '');
  if (!out.empty) throw new DiscoverySettingsError(out.violations, subject);
  return (datacenter as string | undefined) ?? IN_MEMORY_DATACENTER;
}

/**
 * Validates the instances of `name` with the rules of `register()` (the same reader) and fills
 * the defaults: address `127.0.0.1`, tags `[]`, meta `{}`, node `in-memory`. Throws a
 * `DiscoverySettingsError` naming the field (`<path>[i].port`) before anything changes.
 */
export function readInstances(
  name: unknown,
  instances: unknown,
  path: string,
  subject: string,
): ServiceInstance[] {
  const out = new ViolationCollector();
  out.validate(Object.assign(new ListName(), { name }), path);
  if (!Array.isArray(instances)) out.add(path, `${path} must be an array of instances`);
  if (!out.empty) throw new DiscoverySettingsError(out.violations, subject);
  return (instances as unknown[]).map((raw, i) =>
    readInstance(name as string, raw, `${path}[${i}]`, subject),
  );
}

function readInstance(name: string, raw: unknown, path: string, subject: string): ServiceInstance {
  const { node, datacenter, name: listed, healthCheck, ...fields } = isPlainObject(raw) ? raw : {};
  const out = new ViolationCollector();
  if (listed !== undefined && listed !== name) {
    out.add(`${path}.name`, `${path}.name must be "${name}" (where it is listed) or absent`);
  }
  if (healthCheck !== undefined) {
    out.add(`${path}.healthCheck`, `${path}.healthCheck is not a known setting`);
  }
  const extras = Object.assign(new InstanceExtras(), { node, datacenter });
  out.validate(extras, path);
  if (!out.empty) throw new DiscoverySettingsError(out.violations, subject);
  // Not an object: readRegistration says so.
  const registration = isPlainObject(raw) ? { ...fields, name } : raw;
  const args = readRegistration(registration as ServiceRegistration, path, subject);
  const instance: ServiceInstance = {
    serviceId: args.serviceId,
    name: args.name,
    address: args.address ?? IN_MEMORY_ADDRESS,
    port: args.port,
    tags: args.tags,
    meta: args.meta,
    node: extras.node ?? IN_MEMORY_NODE,
  };
  if (extras.datacenter !== undefined) instance.datacenter = extras.datacenter;
  return instance;
}
