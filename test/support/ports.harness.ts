import net from 'node:net';

/**
 * A port that was free a moment ago (listen on 0, close). Racy by nature: whoever binds it
 * must retry with a new one on EADDRINUSE (startConsulAgent does).
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** `count` different ports, each free on `host` a moment ago (racy: see freePort). */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < count) {
    const port = await freePort(host);
    if (!ports.includes(port)) ports.push(port);
  }
  return ports;
}
