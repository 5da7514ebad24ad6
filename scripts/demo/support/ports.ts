import { once } from 'node:events';
import net from 'node:net';

/**
 * Ports that were free on 127.0.0.1 a moment ago. Someone else may take them before we bind
 * them, so callers retry with new ports on "address already in use".
 */
export async function freeLoopbackPorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, async () => {
      const server = net.createServer();
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      return server;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}
