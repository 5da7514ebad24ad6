// Raw Consul HTTP API on Node's fetch: how the benchmark makes changes, independent of the library.

export function consulApi(baseUrl) {
  const request = async (method, path, body) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: body === undefined ? undefined : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status} ${text.trim()}`);
    return text ? JSON.parse(text) : undefined;
  };
  return {
    request,
    /** A service instance with a TTL check that starts passing (a new TTL check starts critical). */
    register: (name, id, port, extra = {}) =>
      request('PUT', '/v1/agent/service/register', {
        Name: name,
        ID: id,
        Address: '127.0.0.1',
        Port: port,
        ...extra,
        Check: { TTL: '30m', Status: 'passing' },
      }),
    deregister: (id) => request('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`),
    failTtl: (id) => request('PUT', `/v1/agent/check/fail/service:${encodeURIComponent(id)}`),
    passTtl: (id) => request('PUT', `/v1/agent/check/pass/service:${encodeURIComponent(id)}`),
    passing: (name) => request('GET', `/v1/health/service/${encodeURIComponent(name)}?passing`),
    /** Runs `fn` over `items` with at most `width` in flight. */
    async inBatches(items, width, fn) {
      for (let i = 0; i < items.length; i += width) {
        await Promise.all(items.slice(i, i + width).map(fn));
      }
    },
  };
}
