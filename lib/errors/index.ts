export * from './discovery.error.js';
export * from './discovery-settings.error.js';
export * from './discovery-unavailable.error.js';
export * from './discovery-timeout.error.js';
export * from './consul-response.error.js';
export * from './no-instance.error.js';
