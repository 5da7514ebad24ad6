import http from 'node:http';
import https from 'node:https';

export interface HttpAnswer {
  status: number;
  body: string;
}

/**
 * One request without keep-alive (so the demo leaves no pooled sockets behind), bounded by
 * `timeoutMs`. Rejects on transport errors only; any HTTP status resolves.
 */
export function httpRequest(method: string, url: string, timeoutMs: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const client = url.startsWith('https:') ? https : http;
    const req = client.request(url, { method, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () =>
      req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)),
    );
    req.on('error', reject);
    req.end();
  });
}

export function httpGet(url: string, timeoutMs: number): Promise<HttpAnswer> {
  return httpRequest('GET', url, timeoutMs);
}

/** GET that expects a 200 with a JSON body. */
export async function getJson(url: string, timeoutMs: number): Promise<unknown> {
  const { status, body } = await httpGet(url, timeoutMs);
  if (status !== 200) throw new Error(`GET ${url}: HTTP ${status} ${body.trim()}`);
  return JSON.parse(body) as unknown;
}
