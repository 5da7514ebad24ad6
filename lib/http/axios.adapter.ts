import { Readable, type Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { AxiosAdapter, AxiosResponse, InternalAxiosRequestConfig } from 'axios';
import type { Dispatcher } from 'undici';
import { axiosBodyMessage, axiosMissingMessage } from '../errors/error-messages.js';
import { CALL_OPTIONS, type CallOptions } from './discovery.dispatcher.js';

type AxiosModule = typeof import('axios');

/** The optional peer, imported once, on the first `axiosAdapter()` call. */
function loadAxios(): Promise<AxiosModule> {
  return import('axios').catch((cause: unknown) => {
    throw new Error(axiosMissingMessage(), { cause });
  });
}

type RequestBody = string | Buffer | Readable | undefined;

/** What axios's request transform left in `config.data`, as undici's `request` takes it. */
function requestBody(data: unknown): RequestBody {
  if (data === undefined || data === null) return undefined;
  if (typeof data === 'string' || Buffer.isBuffer(data) || data instanceof Readable) return data;
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(axiosBodyMessage(Object.prototype.toString.call(data)));
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** What follow-redirects (axios's own http adapter) allows when `maxRedirects` is not set. */
const DEFAULT_MAX_REDIRECTS = 21;
/** Headers that must not follow a redirect to another host (as follow-redirects drops them). */
const CREDENTIALS = ['authorization', 'cookie', 'proxy-authorization'];

/** The decoder for a `content-encoding` axios's http adapter decodes, if any. */
function decoder(encoding: string | string[] | undefined): Transform | undefined {
  switch (String(encoding ?? '').toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip();
    case 'deflate':
      return createInflate();
    case 'br':
      return createBrotliDecompress();
    default:
      return undefined;
  }
}

/** The body's bytes, refusing more than `max` (axios's `maxContentLength`, -1 = unbounded). */
async function readBounded(body: Readable, max: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    length += (chunk as Buffer).length;
    if (max > -1 && length > max) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function responseData(
  body: Readable,
  config: InternalAxiosRequestConfig,
  tooLarge: () => Error,
): Promise<unknown> {
  if (config.responseType === 'stream') return body;
  const bytes = await readBounded(body, config.maxContentLength ?? -1, tooLarge);
  if (config.responseType === 'arraybuffer') return bytes;
  if (config.responseType === 'blob') return new Blob([bytes]);
  // json and text: axios's response transform parses the string, as with its own http adapter.
  return bytes.toString((config.responseEncoding as BufferEncoding | undefined) ?? 'utf8');
}

/** The length of a request body when it is known before sending. */
function bodyLength(body: RequestBody): number | undefined {
  if (typeof body === 'string') return Buffer.byteLength(body);
  return Buffer.isBuffer(body) ? body.length : undefined;
}

/** The next hop of a redirect: method and body per follow-redirects' rules. */
function nextHop(status: number, method: string, body: RequestBody) {
  // 303, and 301/302 after a POST, become a GET without a body (browsers and follow-redirects).
  const toGet =
    (status === 303 && method !== 'HEAD') ||
    ((status === 301 || status === 302) && method === 'POST');
  return toGet ? { method: 'GET', body: undefined } : { method, body };
}

/**
 * An axios adapter that sends through the discovery dispatcher (the same resolution, balancing,
 * ejection and retries as `fetch`). `config.timeout` becomes each hop's deadline and
 * `config.signal` aborts it; redirects are followed up to `maxRedirects` (each hop's URL resolved
 * again: a service name stays a service name), `gzip` / `deflate` / `br` bodies decoded unless
 * `decompress: false`, `maxContentLength` / `maxBodyLength` enforced; a status `validateStatus`
 * refuses rejects as axios's own adapters do. Every rejection is an `AxiosError`
 * (`axios.isAxiosError`) whose `cause` is the client's.
 */
export function createAxiosAdapter(dispatcher: Dispatcher): AxiosAdapter {
  const axiosLoaded = loadAxios();
  // Until the first call, an unhandled rejection here would be reported though nobody awaits it.
  axiosLoaded.catch(() => undefined);
  return async (config: InternalAxiosRequestConfig): Promise<AxiosResponse> => {
    const { default: axios } = await axiosLoaded;
    const { AxiosError: AxiosErrorClass, CanceledError } = axios;
    const fail = (message: string, code: string): Error =>
      new AxiosErrorClass(message, code, config);
    let response: AxiosResponse;
    try {
      let url = new URL(axios.getUri(config));
      let method = (config.method ?? 'get').toUpperCase();
      const headers = config.headers.toJSON(true);
      const decompress = config.decompress !== false;
      if (decompress && !Object.keys(headers).some((h) => h.toLowerCase() === 'accept-encoding')) {
        headers['accept-encoding'] = 'gzip, deflate, br';
      }
      let body = requestBody(config.data);
      const maxBodyLength = config.maxBodyLength ?? -1;
      if (maxBodyLength > -1 && (bodyLength(body) ?? 0) > maxBodyLength) {
        throw fail('Request body larger than maxBodyLength limit', AxiosErrorClass.ERR_BAD_REQUEST);
      }
      const maxRedirects = config.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
      const options: CallOptions = config.timeout ? { deadlineMs: config.timeout } : {};
      for (let hop = 0; ; hop++) {
        const answer = await dispatcher.request({
          origin: url.origin,
          path: `${url.pathname}${url.search}`,
          method,
          headers,
          body,
          signal: config.signal,
          [CALL_OPTIONS]: options,
        } as Dispatcher.RequestOptions);
        const location = answer.headers.location;
        if (maxRedirects > 0 && REDIRECTS.has(answer.statusCode) && typeof location === 'string') {
          await answer.body.dump();
          if (hop >= maxRedirects) {
            throw fail('Maximum number of redirects exceeded', 'ERR_FR_TOO_MANY_REDIRECTS');
          }
          const next = new URL(location, url);
          if (next.host !== url.host) {
            for (const name of Object.keys(headers)) {
              if (CREDENTIALS.includes(name.toLowerCase())) delete headers[name];
            }
          }
          ({ method, body } = nextHop(answer.statusCode, method, body));
          if (body === undefined) {
            for (const name of Object.keys(headers)) {
              if (/^content-(type|length)$/i.test(name)) delete headers[name];
            }
          }
          url = next;
          continue;
        }
        const decoded = decompress && method !== 'HEAD' && answer.statusCode !== 204;
        const decode = decoded ? decoder(answer.headers['content-encoding']) : undefined;
        const responseHeaders = { ...answer.headers };
        if (decode) {
          // As axios's http adapter: the decoded body no longer has that encoding.
          delete responseHeaders['content-encoding'];
          delete responseHeaders['content-length'];
        }
        const stream = decode ? answer.body.pipe(decode) : answer.body;
        if (decode) answer.body.on('error', (error) => decode.destroy(error));
        const tooLarge = (): Error =>
          fail(
            `maxContentLength size of ${config.maxContentLength} exceeded`,
            AxiosErrorClass.ERR_BAD_RESPONSE,
          );
        response = {
          data: await responseData(stream, config, tooLarge),
          status: answer.statusCode,
          statusText: answer.statusText,
          headers: responseHeaders,
          config,
        };
        break;
      }
    } catch (error) {
      if (config.signal?.aborted) throw new CanceledError(undefined, undefined, config);
      if (axios.isAxiosError(error)) throw error;
      const cause = error as Error & { code?: string };
      throw AxiosErrorClass.from(cause, cause.code, config);
    }
    if (config.validateStatus && !config.validateStatus(response.status)) {
      const code =
        response.status >= 500 ? AxiosErrorClass.ERR_BAD_RESPONSE : AxiosErrorClass.ERR_BAD_REQUEST;
      throw new AxiosErrorClass(
        `Request failed with status code ${response.status}`,
        code,
        config,
        undefined,
        response,
      );
    }
    return response;
  };
}
