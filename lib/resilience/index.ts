export * from './abortable-delay.js';
export * from './backoff.js';
export * from './retry.js';
export * from './token-bucket.js';
