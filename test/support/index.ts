export * from './toolkit.js';
export * from './discovery-apps.harness.js';
export * from './persisted-checks.harness.js';
export * from './reliability-report.harness.js';
export * from './test-ca.harness.js';
export * from './shard-table.harness.js';
export * from './metrics.harness.js';
