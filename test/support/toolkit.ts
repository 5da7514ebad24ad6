// The Consul test toolkit without the library under test: agents (single, restart, cluster),
// free ports, the counting/delaying proxy, the raw Consul API, bounded waits, in-process apps for
// any DiscoveryModule and child-process apps on the built dist/ (sharded and HTTP server ones
// too, with the HTTP client's SIGKILL-under-load scenario and an attempt tap). The specs import
// it through ./index.js; the benchmark runs it compiled (`npm run bench` builds .tmp/toolkit with
// tsconfig.toolkit.json); the demo compiles the files it imports with scripts/demo/tsconfig.json.
export * from './apps.harness.js';
export * from './capturing-logger.harness.js';
export * from './child-app.harness.js';
export * from './consul-agent.harness.js';
export * from './consul-api.harness.js';
export * from './consul-cluster.harness.js';
export * from './consul-process.harness.js';
export * from './counting-proxy.harness.js';
export * from './echo-servers.harness.js';
export * from './http-attempts.harness.js';
export * from './http-children.harness.js';
export * from './http-failover.harness.js';
export * from './ports.harness.js';
export * from './schedule-children.harness.js';
export * from './seeded-random.harness.js';
export * from './shard-children.harness.js';
export * from './wait-for.harness.js';
