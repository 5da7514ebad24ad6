import { readdirSync, readFileSync } from 'node:fs';

// Every `// #region readme` … `// #endregion readme` block of the files in test/examples/ must
// appear verbatim in the README as a ```ts block, so the README's examples are the code that is
// typechecked, linted and run here (each file says which spec runs it).
const dir = new URL('./', import.meta.url);
const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const REGION = /\/\/ #region readme\n([\s\S]*?)\/\/ #endregion readme/g;

const regions = readdirSync(dir)
  .filter((file) => file.endsWith('.ts'))
  .sort()
  .flatMap((file) =>
    [...readFileSync(new URL(file, dir), 'utf8').matchAll(REGION)].map((m, i) => ({
      name: `${file} #${i + 1}`,
      code: m[1],
    })),
  );

describe('README examples', () => {
  it('finds the examples', () => {
    expect(regions.length).toBeGreaterThanOrEqual(8);
  });

  it.each(regions)('README shows $name verbatim', ({ code }) => {
    expect(readme).toContain('```ts\n' + code + '```');
  });
});
