import type { HealthCheckSettings } from '../protocol/health-check.rules.js';
import type { AgentCheckDefinition, AgentServiceDefinition } from './consul.types.js';

export interface RegistrationFields {
  name: string;
  serviceId: string;
  port: number;
  address?: string;
  tags: string[];
  meta: Record<string, string>;
  healthCheck?: HealthCheckSettings;
}

/** The agent's check id for a service registered with one `Check`. */
export const serviceCheckId = (serviceId: string): string => `service:${serviceId}`;

/** Our registration → the agent's body. `initialPassing` starts a TTL check passing. */
export function toAgentDefinition(
  registration: RegistrationFields,
  initialPassing: boolean,
): AgentServiceDefinition {
  const definition: AgentServiceDefinition = {
    name: registration.name,
    id: registration.serviceId,
    port: registration.port,
    tags: registration.tags,
    meta: registration.meta,
  };
  if (registration.address !== undefined) definition.address = registration.address;
  if (registration.healthCheck) {
    definition.check = toAgentCheck(registration.healthCheck, initialPassing);
  }
  return definition;
}

function toAgentCheck(check: HealthCheckSettings, initialPassing: boolean): AgentCheckDefinition {
  const out: AgentCheckDefinition = {};
  if ('ttl' in check) {
    out.ttl = check.ttl;
    if (initialPassing) out.status = 'passing';
  } else {
    if ('http' in check) {
      out.http = check.http;
      if (check.method !== undefined) out.method = check.method;
      if (check.header !== undefined) out.header = check.header;
      if (check.tlsSkipVerify !== undefined) out.tlsskipverify = check.tlsSkipVerify;
    } else {
      out.tcp = check.tcp;
    }
    out.interval = check.interval;
    out.timeout = check.timeout;
  }
  if (check.deregisterCriticalServiceAfter !== undefined) {
    out.deregistercriticalserviceafter = check.deregisterCriticalServiceAfter;
  }
  return out;
}
