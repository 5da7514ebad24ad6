// @athomic/discovery/terminus: the health indicator for @nestjs/terminus (an optional peer, loaded
// only through this entry point).
export { DiscoveryHealthIndicator } from './discovery-health.indicator.js';
export type { DiscoveryHealthOptions } from './discovery-health.arguments.js';
export type { DiscoveryHealthDetails, WatchHealth } from './discovery-health.report.js';
