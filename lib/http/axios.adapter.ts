import { Readable } from 'node:stream';
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

async function responseData(
  body: Dispatcher.ResponseData['body'],
  responseType: InternalAxiosRequestConfig['responseType'],
): Promise<unknown> {
  if (responseType === 'stream') return body;
  if (responseType === 'arraybuffer') return Buffer.from(await body.arrayBuffer());
  if (responseType === 'blob') return body.blob();
  // json and text: axios's response transform parses the string, as with its own http adapter.
  return body.text();
}

/**
 * An axios adapter that sends through the discovery dispatcher (the same resolution, balancing,
 * ejection and retries as `fetch`). `config.timeout` becomes the call's deadline and
 * `config.signal` aborts it; a status `validateStatus` refuses rejects as axios's own adapters
 * do. Every rejection is an `AxiosError` (`axios.isAxiosError`) whose `cause` is the client's.
 */
export function createAxiosAdapter(dispatcher: Dispatcher): AxiosAdapter {
  const axiosLoaded = loadAxios();
  // Until the first call, an unhandled rejection here would be reported though nobody awaits it.
  axiosLoaded.catch(() => undefined);
  return async (config: InternalAxiosRequestConfig): Promise<AxiosResponse> => {
    const { default: axios } = await axiosLoaded;
    const { AxiosError: AxiosErrorClass, CanceledError } = axios;
    let response: AxiosResponse;
    try {
      const url = new URL(axios.getUri(config));
      const options: CallOptions = config.timeout ? { deadlineMs: config.timeout } : {};
      const { statusCode, headers, body } = await dispatcher.request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: (config.method ?? 'get').toUpperCase(),
        headers: config.headers.toJSON(true),
        body: requestBody(config.data),
        signal: config.signal,
        [CALL_OPTIONS]: options,
      } as Dispatcher.RequestOptions);
      response = {
        data: await responseData(body, config.responseType),
        status: statusCode,
        statusText: '',
        headers,
        config,
      };
    } catch (error) {
      if (config.signal?.aborted) throw new CanceledError(undefined, undefined, config);
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
