// The README's worker entry point (typechecked, never run by the tests: it would start a process
// of its own). The module it boots runs in invoicing-worker.example.e2e-spec.ts.
// #region readme
// main.ts
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { InvoicingWorkerModule } from './invoicing-worker.module.js';

// An application context: no HTTP server. Bootstrap registers the instance (TTL check started
// passing), starts its heartbeat and the partitions' handlers.
const app = await NestFactory.createApplicationContext(InvoicingWorkerModule);
// SIGTERM/SIGINT → app.close(): handlers aborted and drained, locks released, session destroyed,
// then deregistered, all within shutdownTimeoutMs.
app.enableShutdownHooks();
// #endregion readme
