/**
 * One instance of the example service, run as its own process by run.ts. Its parent passes
 * ORDERS_INSTANCE / ORDERS_PORT / ORDERS_ZONE and DEMO_CONSUL_* in the environment and stops it
 * with SIGTERM; `enableShutdownHooks()` turns that into `app.close()`, which stops the partition
 * handlers, releases the partitions and deregisters the instance before the process exits. Each
 * change of its partitions is sent to the parent over the IPC channel.
 */
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { DiscoveryService, ShardingService } from '@athomic/discovery';

import { OrdersModule } from './orders.module.js';
import type { AssignmentMessage, ReadyMessage } from './support/children.js';
import { DemoLogger } from './support/logger.js';

// The parent prefixes and shows every line this process writes.
const logger = new DemoLogger((line, isError) =>
  (isError ? process.stderr : process.stdout).write(`${line}\n`),
);

async function main(): Promise<void> {
  const app = await NestFactory.create(OrdersModule, { logger });
  app.enableShutdownHooks();
  try {
    await app.listen(Number(process.env.ORDERS_PORT), '127.0.0.1');
  } catch (error) {
    await app.close();
    throw error;
  }
  const self = app.get(DiscoveryService).self;
  const ready: ReadyMessage = {
    type: 'ready',
    serviceId: self.serviceId,
    address: self.address ?? '127.0.0.1',
    port: self.port,
    pid: process.pid,
  };
  process.send?.(ready);
  // Every change of the partitions this instance owns goes to the parent, which prints the table.
  const sharding = app.get(ShardingService);
  sharding.assignments$.subscribe((assignment) => {
    if (!process.connected) return;
    const tokens: Record<number, number> = {};
    for (const p of assignment.owned) {
      const token = sharding.token(p);
      if (token !== undefined) tokens[p] = token;
    }
    const message: AssignmentMessage = {
      type: 'assignment',
      serviceId: self.serviceId,
      ...assignment,
      tokens,
    };
    process.send?.(message);
  });
  // If the parent goes away without stopping us, leave Consul cleanly instead of lingering.
  process.once('disconnect', () => void app.close());
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
  // The IPC channel would keep this process alive.
  if (process.connected) process.disconnect();
});
