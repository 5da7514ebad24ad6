export * from './agent-definition.js';
export * from './consul.client.js';
export * from './consul-discovery.provider.js';
export type * from './consul.types.js';
