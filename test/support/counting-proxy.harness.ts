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

export interface CountingProxyOptions {
  /** Host the proxy forwards to; default 127.0.0.1. */
  targetHost?: string;
  /** Holds every chunk from the target this long before passing it on (a slow agent). */
  delayMs?: number;
}

export interface CountingProxy {
  readonly port: number;
  /** '127.0.0.1:PORT' — what CONSUL_HTTP_ADDR / consul.host+port would name. */
  readonly addr: string;
  readonly baseUrl: string;
  /** Client connections open right now. */
  readonly openConnections: number;
  /** Client connections accepted since start. */
  readonly totalConnections: number;
  /** First line of every HTTP request seen, in order, e.g. 'GET /v1/health/service/a?index=7 HTTP/1.1'. */
  readonly requestLines: readonly string[];
  /** Response delay in ms; may be changed at any time (applies to chunks that arrive later). */
  delayMs: number;
  /** Request lines containing `match` (substring or RegExp), e.g. requests('index=') for long-polls. */
  requests(match?: string | RegExp): string[];
  /** Destroys every open connection (both sides) but keeps listening: a reset keep-alive socket. */
  resetConnections(): void;
  /** Stops listening and destroys every connection. */
  close(): Promise<void>;
}

const REQUEST_LINE = /^[A-Z]+ \S+ HTTP\/1\.[01]$/;

/** A TCP proxy on 127.0.0.1:0 in front of `targetPort` that counts connections and HTTP requests. */
export async function startCountingProxy(
  targetPort: number,
  { targetHost = '127.0.0.1', delayMs = 0 }: CountingProxyOptions = {},
): Promise<CountingProxy> {
  const pairs = new Set<{
    client: net.Socket;
    upstream: net.Socket;
    timers: Set<NodeJS.Timeout>;
  }>();
  const requestLines: string[] = [];
  let total = 0;

  const server = net.createServer((client) => {
    total += 1;
    // Nagle on either side adds up to 40 ms per exchange (CONSUL.md).
    client.setNoDelay(true);
    const upstream = net.connect({ host: targetHost, port: targetPort });
    upstream.setNoDelay(true);
    const pair = { client, upstream, timers: new Set<NodeJS.Timeout>() };
    pairs.add(pair);

    // Parses requests (head, then Content-Length bytes of body) so that a request following a
    // body without a trailing newline on a kept-alive socket is still seen.
    let buffered = Buffer.alloc(0);
    let bodyLeft = 0;
    client.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        if (bodyLeft > 0) {
          const skip = Math.min(bodyLeft, buffered.length);
          buffered = buffered.subarray(skip);
          bodyLeft -= skip;
          if (bodyLeft > 0) break;
        }
        const end = buffered.indexOf('\r\n\r\n');
        if (end < 0) {
          buffered = buffered.subarray(-65536);
          break;
        }
        const head = buffered.subarray(0, end).toString('latin1').split('\r\n');
        buffered = buffered.subarray(end + 4);
        const line = head[0] ?? '';
        if (REQUEST_LINE.test(line)) requestLines.push(line);
        const length = head.find((h) => /^content-length:/i.test(h));
        bodyLeft = length ? Number(length.split(':')[1]) || 0 : 0;
      }
      upstream.write(chunk);
    });
    client.on('end', () => upstream.end());

    // Chunks keep their order: each is released no earlier than the one before it.
    let releaseAt = 0;
    let closed = false;
    const release = (fn: () => void): void => {
      // After teardown nothing may arm a timer: it would outlive close().
      if (closed) return;
      const wait = proxy.delayMs;
      if (wait <= 0 && pair.timers.size === 0) return fn();
      releaseAt = Math.max(Date.now() + wait, releaseAt);
      const timer = setTimeout(() => {
        pair.timers.delete(timer);
        fn();
      }, releaseAt - Date.now());
      pair.timers.add(timer);
    };
    upstream.on('data', (chunk: Buffer) => release(() => client.write(chunk)));
    upstream.on('end', () => release(() => client.end()));

    const teardown = (): void => {
      closed = true;
      for (const timer of pair.timers) clearTimeout(timer);
      pair.timers.clear();
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('close', teardown);
    client.on('error', teardown);
    // A refused or reset upstream resets the client too, as a dead agent would.
    upstream.on('error', () => client.resetAndDestroy());
    upstream.on('close', () =>
      release(() => {
        if (!client.writableEnded) client.destroy();
      }),
    );
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;

  const resetConnections = (): void => {
    for (const { client, upstream } of [...pairs]) {
      client.resetAndDestroy();
      upstream.destroy();
    }
  };

  const proxy: CountingProxy = {
    port,
    addr: `127.0.0.1:${port}`,
    baseUrl: `http://127.0.0.1:${port}`,
    get openConnections() {
      return pairs.size;
    },
    get totalConnections() {
      return total;
    },
    requestLines,
    delayMs,
    requests: (match) =>
      requestLines.filter((line) =>
        match === undefined
          ? true
          : typeof match === 'string'
            ? line.includes(match)
            : match.test(line),
      ),
    resetConnections,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        resetConnections();
      }),
  };
  return proxy;
}
