/** A request body as the dispatcher gets it (fetch hands over an async iterable even for a string). */
export type DispatchBody = unknown;

export interface PreparedBody {
  body: DispatchBody;
  /** The same body can be sent again (to retry on another instance). */
  replayable: boolean;
}

function isAsyncIterable(value: unknown): value is AsyncIterable<Uint8Array | string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
  );
}

/** Strings, bytes and no body can be sent again as they are. */
export function isReplayableAsIs(body: DispatchBody): boolean {
  return (
    body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array
  );
}

/**
 * Buffers a streamed body up to `maxBytes` so that it can be replayed; a larger one is passed on
 * whole (what was read first, then the rest) and is not replayable. Strings and bytes are
 * replayable as they are.
 */
export async function prepareBody(body: DispatchBody, maxBytes: number): Promise<PreparedBody> {
  if (isReplayableAsIs(body)) return { body, replayable: true };
  if (!isAsyncIterable(body)) return { body, replayable: false };
  const iterator = body[Symbol.asyncIterator]();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const next = await iterator.next();
    if (next.done) return { body: Buffer.concat(chunks), replayable: true };
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    chunks.push(chunk);
    size += chunk.byteLength;
    if (size > maxBytes) {
      return { body: rest(chunks, iterator), replayable: false };
    }
  }
}

async function* rest(
  read: Uint8Array[],
  iterator: AsyncIterator<Uint8Array | string>,
): AsyncGenerator<Uint8Array | string> {
  yield* read;
  for (;;) {
    const next = await iterator.next();
    if (next.done) return;
    yield next.value;
  }
}
