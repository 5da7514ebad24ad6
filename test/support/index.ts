export * from './consul-agent.harness.js';
export * from './consul-api.harness.js';
export * from './counting-proxy.harness.js';
export * from './test-ca.harness.js';
export * from './wait-for.harness.js';
