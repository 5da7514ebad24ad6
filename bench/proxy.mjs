// A TCP proxy in front of the agent that counts connections and HTTP requests, so the benchmark
// can tell how many sockets and requests the library really uses. Nagle is off on both sides
// (CONSUL.md: otherwise up to 40 ms per exchange).
import net from 'node:net';

const REQUEST_LINE = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/;

export async function startCountingProxy(targetPort, targetHost = '127.0.0.1') {
  const conns = new Set();
  const requests = []; // { at: ms, method, path }
  let accepted = 0;
  let peak = 0;

  const server = net.createServer((client) => {
    accepted++;
    client.setNoDelay(true);
    const upstream = net.connect({ host: targetHost, port: targetPort });
    upstream.setNoDelay(true);
    // `waiting`: a request went up and no response byte came back yet.
    const conn = { client, upstream, waiting: false, lastPath: '' };
    conns.add(conn);
    peak = Math.max(peak, conns.size);
    let carry = '';
    client.on('data', (chunk) => {
      const lines = (carry + chunk.toString('latin1')).split('\n');
      carry = (lines.pop() ?? '').slice(-8192);
      for (const raw of lines) {
        const m = REQUEST_LINE.exec(raw.replace(/\r$/, ''));
        if (m) {
          requests.push({ at: Date.now(), method: m[1], path: m[2] });
          conn.waiting = true;
          conn.lastPath = m[2];
        }
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      conn.waiting = false;
      client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    const teardown = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(conn);
    };
    client.on('close', teardown);
    client.on('error', teardown);
    upstream.on('close', teardown);
    upstream.on('error', teardown);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();

  return {
    host: '127.0.0.1',
    port,
    get accepted() {
      return accepted;
    },
    /** Most client connections open at once since start (or the last resetPeak()). */
    get peak() {
      return peak;
    },
    resetPeak: () => {
      peak = conns.size;
    },
    /** Client connections open now. */
    get open() {
      return conns.size;
    },
    /** Requests sent and not answered yet that are blocking queries (`index=` in the query). */
    get longPollsInFlight() {
      return [...conns].filter((c) => c.waiting && /[?&]index=/.test(c.lastPath)).length;
    },
    /** Requests sent and not answered yet, of any kind. */
    get inFlight() {
      return [...conns].filter((c) => c.waiting).length;
    },
    requestCount: () => requests.length,
    requestsSince: (index) => requests.slice(index),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const c of conns) {
          c.client.destroy();
          c.upstream.destroy();
        }
      }),
  };
}
