export * from './blocking-query.loop.js';
export * from './change-feed.js';
export * from './instance-set.js';
export * from './service-watch.js';
export * from './watch-key.js';
export * from './watch.registry.js';
