import net from 'node:net';

export interface CountingProxyOptions {
  /** Host the proxy forwards to; default 127.0.0.1. */
  targetHost?: string;
  /** Holds every chunk from the target this long before passing it on (a slow agent). */
  delayMs?: number;
  /** Holds every chunk from the client this long before passing it on (a slow way there). */
  requestDelayMs?: number;
}

/** One HTTP request seen by the proxy. */
export interface ProxiedRequest {
  /** As sent, e.g. 'PUT /v1/agent/check/pass/service%3Aa-1 HTTP/1.1'. */
  line: string;
  /** The request line with the path percent-decoded ('…/pass/service:a-1 HTTP/1.1'). */
  decoded: string;
  method: string;
  /** Path and query as sent. */
  path: string;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  /** Request line and headers, raw. */
  head: string;
  /** Date.now() when the request head was seen. */
  at: number;
}

export interface CountingProxy {
  readonly host: string;
  readonly port: number;
  /** '127.0.0.1:PORT' — what CONSUL_HTTP_ADDR / consul.host+port would name. */
  readonly addr: string;
  readonly baseUrl: string;
  /** Client connections open right now. */
  readonly openConnections: number;
  /** Client connections accepted since start. */
  readonly totalConnections: number;
  /** Most client connections open at once since start or the last resetPeak(). */
  readonly peakConnections: number;
  /**
   * Long-polls whose client closed before the answer: the agent holds them until their `wait`
   * ends (a closed client does not cancel it), so the proxy keeps their upstream open until the agent answers.
   */
  readonly abandonedConnections: number;
  /** What the agent holds for this client: open + abandoned connections. */
  readonly heldConnections: number;
  /** Most connections held at once since start or the last resetPeak(). */
  readonly peakHeldConnections: number;
  resetPeak(): void;
  /** Requests sent upstream whose answer has not started yet. */
  readonly inFlight: number;
  /** The same, only blocking queries (`index=` in the query). */
  readonly longPollsInFlight: number;
  /** Every HTTP request seen, in order (parsed with Content-Length, so keep-alive reuse is handled). */
  readonly log: readonly ProxiedRequest[];
  /** Request lines as sent, in order, e.g. 'GET /v1/health/service/a?index=7 HTTP/1.1'. */
  readonly requestLines: readonly string[];
  /** Response delay in ms; may be changed at any time (applies to chunks that arrive later). */
  delayMs: number;
  /**
   * Request delay in ms, the same way; a request held when its client goes away is dropped
   * (never reaches the target).
   */
  requestDelayMs: number;
  /**
   * Called with each request once it went upstream (the agent has it); may be set at any time.
   * Runs in the test's process: a busy loop here stalls every app in it, with the request on
   * the wire.
   */
  onRequest?: (request: ProxiedRequest) => void;
  /** Request lines (as sent) containing `match` (substring or RegExp), e.g. requests('index='). */
  requests(match?: string | RegExp): string[];
  /** Requests whose decoded request line contains `match` (or matches the RegExp). */
  matching(match: string | RegExp): ProxiedRequest[];
  /** Destroys every open connection (both sides) but keeps listening: a reset keep-alive socket. */
  resetConnections(): void;
  /** Stops listening, destroys every connection and drops every held answer. */
  close(): Promise<void>;
}

const REQUEST_LINE = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/;

const test = (match: string | RegExp, text: string): boolean =>
  typeof match === 'string' ? text.includes(match) : match.test(text);

/**
 * A TCP proxy on 127.0.0.1:0 in front of `targetPort` that counts connections and HTTP
 * requests (with their headers) and can hold answers back (a slow agent).
 */
export async function startCountingProxy(
  targetPort: number,
  { targetHost = '127.0.0.1', delayMs = 0, requestDelayMs = 0 }: CountingProxyOptions = {},
): Promise<CountingProxy> {
  interface Pair {
    client: net.Socket;
    upstream: net.Socket;
    /** A request went up and no answer byte came back yet: its path. */
    waitingFor: string | undefined;
    teardown(): void;
  }
  const pairs = new Set<Pair>();
  /** Client gone mid long-poll; upstream open until the agent answers. */
  const abandoned = new Set<Pair>();
  const log: ProxiedRequest[] = [];
  const requestLines: string[] = [];
  let total = 0;
  let peak = 0;
  let peakHeld = 0;
  const notePeaks = (): void => {
    peak = Math.max(peak, pairs.size);
    peakHeld = Math.max(peakHeld, pairs.size + abandoned.size);
  };

  const server = net.createServer((client) => {
    total += 1;
    // Nagle on either side adds up to 40 ms per exchange.
    client.setNoDelay(true);
    const upstream = net.connect({ host: targetHost, port: targetPort });
    upstream.setNoDelay(true);
    const timers = new Set<NodeJS.Timeout>();
    let closed = false;
    const pair: Pair = {
      client,
      upstream,
      waitingFor: undefined,
      teardown: () => {
        if (closed) return;
        closed = true;
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        client.destroy();
        upstream.destroy();
        pairs.delete(pair);
        abandoned.delete(pair);
      },
    };
    pairs.add(pair);
    notePeaks();

    // Parses requests (head, then Content-Length bytes of body) so that a request following a
    // body without a trailing newline on a kept-alive socket is still seen.
    let buffered = Buffer.alloc(0);
    let bodyLeft = 0;
    /** The last request seen went upstream (not held back by `requestDelayMs`). */
    let reachedAgent = false;
    client.on('data', (chunk: Buffer) => {
      const seen = log.length;
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
        const head = buffered.subarray(0, end).toString('latin1');
        const [line = '', ...lines] = head.split('\r\n');
        buffered = buffered.subarray(end + 4);
        const headers: Record<string, string> = {};
        for (const header of lines) {
          const colon = header.indexOf(':');
          if (colon > 0)
            headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
        }
        bodyLeft = Number(headers['content-length'] ?? 0) || 0;
        const parsed = REQUEST_LINE.exec(line);
        if (!parsed) continue;
        let decoded = line;
        try {
          decoded = decodeURIComponent(line);
        } catch {
          // keep it as sent
        }
        requestLines.push(line);
        log.push({
          line,
          decoded,
          method: parsed[1],
          path: parsed[2],
          headers,
          head,
          at: Date.now(),
        });
        pair.waitingFor = parsed[2];
      }
      const requests = log.slice(seen);
      if (requests.length > 0) reachedAgent = false;
      send(() => {
        upstream.write(chunk);
        reachedAgent = true;
        for (const request of requests) proxy.onRequest?.(request);
      });
    });
    client.on('end', () => send(() => upstream.end()));

    // Chunks keep their order in each direction: each is passed on no earlier than the one
    // before it.
    const delayed = (delay: () => number): ((fn: () => void) => void) => {
      const held = new Set<NodeJS.Timeout>();
      let releaseAt = 0;
      return (fn) => {
        // After teardown nothing may arm a timer: it would outlive close().
        if (closed) return;
        const wait = delay();
        if (wait <= 0 && held.size === 0) return fn();
        releaseAt = Math.max(Date.now() + wait, releaseAt);
        const timer = setTimeout(() => {
          timers.delete(timer);
          held.delete(timer);
          if (!closed) fn();
        }, releaseAt - Date.now());
        timers.add(timer);
        held.add(timer);
      };
    };
    const send = delayed(() => proxy.requestDelayMs);
    const release = delayed(() => proxy.delayMs);
    upstream.on('data', (chunk: Buffer) => {
      pair.waitingFor = undefined;
      if (abandoned.has(pair)) return pair.teardown();
      release(() => client.write(chunk));
    });
    upstream.on('end', () => release(() => client.end()));
    upstream.on('close', () => release(pair.teardown));
    // A refused or reset upstream resets the client too, as a dead agent would.
    upstream.on('error', () => {
      if (!closed) client.resetAndDestroy();
      pair.teardown();
    });
    // A client leaving mid long-poll abandons it: the agent keeps it until its wait ends (one
    // still held by requestDelayMs never reaches the agent).
    const clientGone = (): void => {
      if (closed || abandoned.has(pair)) return;
      if (!reachedAgent || !/[?&]index=/.test(pair.waitingFor ?? '')) return pair.teardown();
      pairs.delete(pair);
      abandoned.add(pair);
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      client.destroy();
    };
    client.on('close', clientGone);
    client.on('error', clientGone);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;

  const resetConnections = (): void => {
    for (const { client, teardown } of [...pairs, ...abandoned]) {
      client.resetAndDestroy();
      teardown();
    }
  };
  const waiting = (): Pair[] => [...pairs].filter((p) => p.waitingFor !== undefined);

  const proxy: CountingProxy = {
    host: '127.0.0.1',
    port,
    addr: `127.0.0.1:${port}`,
    baseUrl: `http://127.0.0.1:${port}`,
    get openConnections() {
      return pairs.size;
    },
    get totalConnections() {
      return total;
    },
    get peakConnections() {
      return peak;
    },
    get abandonedConnections() {
      return abandoned.size;
    },
    get heldConnections() {
      return pairs.size + abandoned.size;
    },
    get peakHeldConnections() {
      return peakHeld;
    },
    resetPeak: () => {
      peak = pairs.size;
      peakHeld = pairs.size + abandoned.size;
    },
    get inFlight() {
      return waiting().length;
    },
    get longPollsInFlight() {
      return waiting().filter((p) => /[?&]index=/.test(p.waitingFor ?? '')).length;
    },
    log,
    requestLines,
    delayMs,
    requestDelayMs,
    requests: (match) =>
      requestLines.filter((line) => (match === undefined ? true : test(match, line))),
    matching: (match) => log.filter((r) => test(match, r.decoded)),
    resetConnections,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const { teardown } of [...pairs, ...abandoned]) teardown();
      }),
  };
  return proxy;
}
