import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startConsulAgent, type ConsulAgent } from './support/index.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const fixtures = join(root, 'test/support/fixtures/consumers');

interface ConsumerOutput {
  nest: string;
  terminus: string;
  /** `HealthCheckService.check` with `DiscoveryHealthIndicator` (`@athomic/discovery/terminus`). */
  health: string;
  found: { serviceId: string; address: string; port: number }[];
}

/**
 * The packed tarball (what npm publishes) installed into fresh folders: a NestJS 11 CommonJS
 * app (require(esm)) and a NestJS 12 ESM app both register, discover, answer a terminus health
 * check through `@athomic/discovery/terminus` (terminus 11 and 12) and close.
 */
describe('packed library in NestJS 11 (CommonJS) and 12 (ESM) apps', () => {
  let agent: ConsulAgent;
  let work: string;
  let tarball: string;

  beforeAll(async () => {
    agent = await startConsulAgent();
    work = mkdtempSync(join(tmpdir(), 'discovery-pack-'));
    const { stdout } = await run('npm', ['pack', '--silent', '--pack-destination', work], {
      cwd: root,
    });
    tarball = join(work, stdout.trim().split('\n').pop()!);
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const consumers: [string, string, string[]][] = [
    [
      'nest11-cjs.cjs',
      '11.',
      ['@nestjs/common@11', '@nestjs/core@11', '@nestjs/config@4', '@nestjs/terminus@11'],
    ],
    [
      'nest12-esm.mjs',
      '12.',
      ['@nestjs/common@12', '@nestjs/core@12', '@nestjs/config@12', '@nestjs/terminus@12'],
    ],
  ];

  it.each(consumers)(
    '%s installs from the tarball, registers, discovers and reports healthy',
    async (file, major, nest) => {
      const dir = mkdtempSync(join(work, 'app-'));
      writeFileSync(join(dir, 'package.json'), '{ "name": "consumer", "private": true }\n');
      await run(
        'npm',
        [
          'install',
          '--no-audit',
          '--no-fund',
          '--silent',
          tarball,
          ...nest,
          'reflect-metadata@0.2',
          'rxjs@7',
          'class-validator@0.14',
        ],
        { cwd: dir, timeout: 180_000 },
      );
      copyFileSync(join(fixtures, file), join(dir, file));
      const serviceId = `compat-${file.split('-')[0]}`;
      const { stdout } = await run('node', [file], {
        cwd: dir,
        timeout: 30_000,
        env: { ...process.env, CONSUL_PORT: String(agent.httpPort), SERVICE_ID: serviceId },
      });
      const output = JSON.parse(stdout.trim().split('\n').pop()!) as ConsumerOutput;
      expect(output.nest.startsWith(major)).toBe(true);
      expect(output.terminus.startsWith(major)).toBe(true);
      expect(output.health).toBe('ok');
      expect(output.found).toEqual([expect.objectContaining({ serviceId, address: '127.0.0.1' })]);
      // It closed: deregistered, and the process ended on its own (execFile resolved).
      expect(await agent.api().agentServices()).not.toHaveProperty(serviceId);
    },
    240_000,
  );
});
