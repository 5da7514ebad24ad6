import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

// The double leaves nothing running: a process that used every part of it (self-registration
// and its heartbeat, sharding, a watch, the HTTP client) ends on its own after app.close().
describe('@athomic/discovery/testing in a process of its own', () => {
  it('works from the built package and the process exits within 2 s of app.close()', async () => {
    const { stdout } = await run('node', ['test/support/fixtures/testing-double-app.mjs'], {
      cwd: root,
      timeout: 30_000,
    });
    const exitedAt = Date.now();
    const seen = JSON.parse(stdout.trim().split('\n').pop()!) as {
      answer: string;
      owned: number[];
      self: string[];
      closedAt: number;
    };
    expect(seen).toMatchObject({ answer: 'orders-1', owned: [0, 1, 2, 3], self: ['billing-1'] });
    expect(exitedAt - seen.closedAt).toBeLessThan(2_000);
  });
});
