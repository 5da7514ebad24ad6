export * from './consul-agent.harness.js';
export * from './consul-api.harness.js';
export * from './counting-proxy.harness.js';
export * from './test-ca.harness.js';
export * from './wait-for.harness.js';
export * from './child-app.harness.js';
export * from './reliability-report.harness.js';
export * from './consul-cluster.harness.js';
