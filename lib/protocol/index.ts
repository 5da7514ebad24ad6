export * from './service-discovery.protocol.js';
