import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { util, type Dispatcher } from 'undici';

/**
 * The handler API undici 7's own connections, `fetch` and `request()` speak (its types mark it
 * deprecated in favour of `onRequestStart`/`onResponse*`). compose() hands an interceptor a
 * newer-API wrapper around such a handler, and a dispatcher given a newer-API handler converts it
 * back, parsing and re-encoding every header on the way; discovery.dispatcher.ts speaks this API
 * end to end.
 */
export interface LegacyHandler {
  onConnect(abort: (reason?: Error) => void, context?: object): void;
  onResponseStarted?(): void;
  /** upgrade / CONNECT requests: the socket, instead of a response. */
  onUpgrade?(statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: Duplex): void;
  onHeaders(
    statusCode: number,
    rawHeaders: Buffer[],
    resume: () => void,
    statusMessage: string,
  ): boolean;
  onData(chunk: Buffer): boolean;
  onComplete(trailers: (Buffer | string)[] | null): void;
  onError(error: Error): void;
}

type Handler = Dispatcher.DispatchHandler;
type Controller = Dispatcher.DispatchController;

/** undici's own rule (its UnwrapHandler): a handler without `onRequestStart` speaks the legacy API. */
function hasLegacyMethods(handler: Handler): handler is Handler & LegacyHandler {
  return typeof handler.onRequestStart !== 'function';
}

/** `handler`'s legacy methods, to call: its own when it has them, else a conversion. */
export function asLegacy(handler: Handler): LegacyHandler {
  return hasLegacyMethods(handler) ? handler : new NewApiView(handler);
}

/** A newer-API handler driven through the legacy calls (pause = answer `false`, resume later). */
class NewApiView implements LegacyHandler {
  private readonly controller = new ViewController();

  constructor(private readonly handler: Handler) {}

  onConnect(abort: (reason?: Error) => void, context?: object): void {
    this.controller.abortWith = abort;
    this.handler.onRequestStart?.(this.controller, context);
  }

  onUpgrade(statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: Duplex): void {
    const headers = util.parseHeaders(rawHeaders ?? []) as IncomingHttpHeaders;
    this.handler.onRequestUpgrade?.(this.controller, statusCode, headers, socket);
  }

  onHeaders(
    statusCode: number,
    rawHeaders: Buffer[],
    resume: () => void,
    message: string,
  ): boolean {
    this.controller.resumeWith = resume;
    const headers = util.parseHeaders(rawHeaders) as IncomingHttpHeaders;
    this.handler.onResponseStart?.(this.controller, statusCode, headers, message);
    return !this.controller.paused;
  }

  onData(chunk: Buffer): boolean {
    this.handler.onResponseData?.(this.controller, chunk);
    return !this.controller.paused;
  }

  onComplete(trailers: (Buffer | string)[] | null): void {
    const parsed = util.parseHeaders(trailers ?? []) as IncomingHttpHeaders;
    this.handler.onResponseEnd?.(this.controller, parsed);
  }

  onError(error: Error): void {
    this.handler.onResponseError?.(this.controller, error);
  }
}

class ViewController implements Controller {
  abortWith?: (reason?: Error) => void;
  resumeWith?: () => void;
  aborted = false;
  paused = false;
  reason: Error | null = null;

  abort(reason?: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason ?? null;
    this.abortWith?.(reason);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.resumeWith?.();
  }
}
