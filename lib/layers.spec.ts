import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Data flows one way through lib/ (docs/ARCHITECTURE.md): a file may import from its own layer
// or a lower one, never from a higher one, and never through a folder's index.ts barrel (ESM +
// decorator metadata crash on import cycles). Higher layers come later in this list.
const LAYERS: readonly (readonly string[])[] = [
  ['errors', 'resilience', 'metrics', 'discovery.constants.ts'],
  ['protocol'],
  ['settings'],
  ['consul'],
  ['watch'],
  ['provider'],
  ['registration', 'sharding'],
  ['http'],
  ['discovery.module-definition.ts', 'discovery.providers.ts', 'discovery.service.ts'],
  ['discovery.module.ts'],
  // The entry points: the main one and the subpaths (testing/ builds on the module's providers).
  ['index.ts', 'testing'],
  // Subpath entry points that pull in optional peers: nothing below may load them.
  ['terminus', 'schedule'],
];

/** Optional peers: only their subpath folder may import them. */
const OPTIONAL_PEERS: Readonly<Record<string, string>> = {
  '@nestjs/terminus': 'terminus',
  '@nestjs/schedule': 'schedule',
  cron: 'schedule',
};

const LIB = dirname(fileURLToPath(import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.spec.ts') ? [path] : [];
  });
}

/** The layer of a file: its top folder under lib/, or its own name at the top. */
function layerOf(file: string): number {
  const top = relative(LIB, file).split('/')[0];
  const layer = LAYERS.findIndex((names) => names.includes(top));
  if (layer < 0) throw new Error(`lib/${top} is in no layer of lib/layers.spec.ts`);
  return layer;
}

function relativeImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/\bfrom '(\.{1,2}\/[^']+)'/g)].map((m) => m[1]);
}

/** `from '<peer>'`, `from '<peer>/…'`, `import '<peer>'` or `import('<peer>')`. */
function importsPackage(text: string, peer: string): boolean {
  const name = peer.replace(/[/.]/g, '\\$&');
  return new RegExp(`(\\bfrom |\\bimport\\(?\\s*)['"]${name}(/[^'"]*)?['"]`).test(text);
}

describe('lib/ layers', () => {
  const files = sources(LIB);

  it('every folder and top-level file has a layer', () => {
    expect(() => files.forEach(layerOf)).not.toThrow();
  });

  it('no file imports from a higher layer', () => {
    const upward = files.flatMap((file) =>
      relativeImports(file)
        .map((spec) => resolve(dirname(file), spec.replace(/\.js$/, '.ts')))
        .filter((target) => layerOf(target) > layerOf(file))
        .map((target) => `${relative(LIB, file)} → ${relative(LIB, target)}`),
    );
    expect(upward).toEqual([]);
  });

  it('optional peers are imported only by their subpath folder', () => {
    const misplaced = files.flatMap((file) => {
      const text = readFileSync(file, 'utf8');
      const top = relative(LIB, file).split('/')[0];
      return Object.entries(OPTIONAL_PEERS)
        .filter(([peer, folder]) => top !== folder && importsPackage(text, peer))
        .map(([peer]) => `${relative(LIB, file)} → ${peer}`);
    });
    expect(misplaced).toEqual([]);
  });

  it('inside lib/, files are imported directly, not through a folder barrel', () => {
    const throughBarrels = files
      .filter((file) => relative(LIB, file) !== 'index.ts')
      .flatMap((file) =>
        relativeImports(file)
          .filter((spec) => spec.endsWith('/index.js'))
          .map((spec) => `${relative(LIB, file)} → ${spec}`),
      );
    expect(throughBarrels).toEqual([]);
  });
});
