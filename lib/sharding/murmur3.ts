const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const utf8 = new TextEncoder();
/** Reused for string keys (a key per message): encoding into it allocates nothing. */
let scratch = new Uint8Array(256);

/** MurmurHash3 x86 32-bit of `bytes` (a string is hashed as its UTF-8 bytes); unsigned. */
export function murmur3(input: string | Uint8Array, seed = 0): number {
  let bytes: Uint8Array;
  let length: number;
  if (typeof input === 'string') {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    if (scratch.length < input.length * 3) scratch = new Uint8Array(input.length * 3);
    bytes = scratch;
    length = utf8.encodeInto(input, scratch).written;
  } else {
    bytes = input;
    length = input.length;
  }
  const blocks = length & ~3;
  let h = seed | 0;
  for (let i = 0; i < blocks; i += 4) {
    let k = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[blocks + 2] << 16;
    if (tail >= 2) k ^= bytes[blocks + 1] << 8;
    k ^= bytes[blocks];
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
