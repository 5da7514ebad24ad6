export * from './discovery.settings.js';
export * from './discovery-module-options.interface.js';
