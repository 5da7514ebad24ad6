import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startConsulAgent, type ConsulAgent } from './support/index.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const fixtures = join(root, 'test/support/fixtures/consumers');

const REQUIRED = ['reflect-metadata@0.2', 'rxjs@7', 'class-validator@0.14'];
const OPTIONAL = [
  '@nestjs/terminus',
  '@nestjs/axios',
  'axios',
  '@opentelemetry/api',
  '@opentelemetry/sdk-metrics',
  '@nestjs/schedule',
  'cron',
];

interface Instance {
  serviceId: string;
  address: string;
  port: number;
}

/** What test/support/fixtures/consumers/consumer.run.cjs prints. */
interface ConsumerOutput {
  nest: string;
  /** The optional peers installed next to it. */
  peers: string[];
  found: Instance[];
  /** `DiscoveryHttpClient.fetch('http://compat/whoami')`. */
  fetched: string;
  /** `HealthCheckService.check` with `DiscoveryHealthIndicator` (`@athomic/discovery/terminus`). */
  health?: string;
  terminus?: string;
  /** `@nestjs/axios` `HttpService` with `axiosAdapter()`, by name. */
  axios?: string;
  /** Instrument names the SDK the consumer registered collected. */
  metrics?: string[];
  /** The same code on `DiscoveryTestingModule` (`@athomic/discovery/testing`). */
  doubled: Instance[];
  doubledFetch: string;
  /** `@nestjs/schedule`'s version, with `@athomic/discovery/schedule` in use. */
  schedule?: string;
  /** `ClusterScheduler.running()` while the app ran. */
  jobs?: string[];
  /** `ShardingService.token()` of the job's partition. */
  jobToken?: number;
  /** The `JobFire`s of the 1-second `@ClusterCron` job, as its handler recorded them. */
  fires?: { name: string; scheduledAt: string; token: number }[];
}

interface Consumer {
  /** Node runs this fixture (both, for the bare install). */
  files: string[];
  major: string;
  /** `@nestjs/schedule`'s major for this Nest line (the one that peers it). */
  schedule?: string;
  packages: string[];
}

/**
 * The packed tarball (what npm publishes) installed into fresh folders: a NestJS 11 CommonJS app
 * (require(esm)) and a NestJS 12 ESM app with every optional peer use all three entry points
 * (register, discover, fetch and axios by name, a terminus health check, the in-memory double,
 * metrics into the consumer's own SDK, a `@ClusterCron` job of `@athomic/discovery/schedule` with
 * exclusive sharding, on @nestjs/schedule 6 and 12 respectively); a NestJS 12 install without any optional peer loads the
 * main and testing entries, from CommonJS and from ESM, and works.
 */
describe('packed library in NestJS 11 (CommonJS) and 12 (ESM) apps', () => {
  let agent: ConsulAgent;
  let work: string;
  const installed = new Map<string, string>();

  const consumers: Record<string, Consumer> = {
    'Nest 11, CommonJS, every optional peer': {
      files: ['consumer.cjs'],
      major: '11.',
      packages: [
        '@nestjs/common@11',
        '@nestjs/core@11',
        '@nestjs/config@4',
        '@nestjs/terminus@11',
        '@nestjs/axios@4',
        'axios@1',
        '@opentelemetry/api@1.10',
        '@opentelemetry/sdk-metrics@3.1',
        // The last line that peers Nest 11 (^10 || ^11); it pins cron 4.
        '@nestjs/schedule@6',
        'cron@4',
      ],
      schedule: '6.',
    },
    'Nest 12, ESM, every optional peer': {
      files: ['consumer.mjs'],
      major: '12.',
      packages: [
        '@nestjs/common@12',
        '@nestjs/core@12',
        '@nestjs/config@12',
        '@nestjs/terminus@12',
        '@nestjs/axios@12',
        'axios@1',
        '@opentelemetry/api@1.10',
        '@opentelemetry/sdk-metrics@3.1',
        '@nestjs/schedule@12',
        'cron@4',
      ],
      schedule: '12.',
    },
    'Nest 12, no optional peer, CommonJS and ESM': {
      files: ['consumer.cjs', 'consumer.mjs'],
      major: '12.',
      packages: ['@nestjs/common@12', '@nestjs/core@12', '@nestjs/config@12'],
    },
  };

  // The three installs run side by side: npm spends most of its time waiting on the registry.
  beforeAll(async () => {
    agent = await startConsulAgent();
    work = mkdtempSync(join(tmpdir(), 'discovery-pack-'));
    const { stdout } = await run('npm', ['pack', '--silent', '--pack-destination', work], {
      cwd: root,
    });
    const tarball = join(work, stdout.trim().split('\n').pop()!);
    await Promise.all(
      Object.entries(consumers).map(async ([name, consumer]) => {
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
            ...consumer.packages,
            ...REQUIRED,
          ],
          { cwd: dir, timeout: 240_000 },
        );
        for (const file of readdirSync(fixtures))
          copyFileSync(join(fixtures, file), join(dir, file));
        installed.set(name, dir);
      }),
    );
  }, 300_000);

  afterAll(async () => {
    await agent?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it.each(Object.keys(consumers))(
    '%s',
    async (name) => {
      const { files, major, packages, schedule } = consumers[name];
      const full = packages.some((p) => p.startsWith('@nestjs/terminus'));
      for (const file of files) {
        const serviceId = `compat-${major.replace('.', '')}-${file.replace('.', '-')}`;
        const { stdout } = await run('node', [file], {
          cwd: installed.get(name),
          timeout: 30_000,
          env: { ...process.env, CONSUL_PORT: String(agent.httpPort), SERVICE_ID: serviceId },
        });
        const output = JSON.parse(stdout.trim().split('\n').pop()!) as ConsumerOutput;
        expect(output.nest.startsWith(major)).toBe(true);
        expect(output.peers).toEqual(full ? OPTIONAL : []);
        expect(output.found).toEqual([
          expect.objectContaining({ serviceId, address: '127.0.0.1' }),
        ]);
        expect(output.fetched).toBe(serviceId);
        expect(output.doubled).toEqual([
          expect.objectContaining({
            serviceId: 'double-1',
            address: '127.0.0.1',
            node: 'in-memory',
          }),
        ]);
        expect(output.doubledFetch).toBe(serviceId);
        if (full) {
          expect(output.terminus?.startsWith(major)).toBe(true);
          expect(output.health).toBe('ok');
          expect(output.axios).toBe(serviceId);
          expect(output.metrics).toEqual(
            expect.arrayContaining(['discovery.consul.request.duration', 'discovery.http.picks']),
          );
          // @athomic/discovery/schedule: the job held (exclusive sharding on the real agent) and
          // run at least once, with the partition's fencing token; its record in Consul says so.
          expect(output.schedule?.startsWith(schedule!)).toBe(true);
          expect(output.jobs).toEqual(['compat-tick']);
          expect(output.jobToken).toBeGreaterThan(0);
          expect(output.fires?.length).toBeGreaterThanOrEqual(1);
          for (const fire of output.fires!) {
            expect(fire).toEqual({
              name: 'compat-tick',
              scheduledAt: expect.stringMatching(/\.000Z$/) as string,
              token: output.jobToken,
            });
          }
          const record = await agent
            .api()
            .request('GET', '/v1/kv/athomic/jobs/compat/compat-tick?raw');
          expect(JSON.parse(record.text)).toMatchObject({ token: output.jobToken });
        } else {
          expect(output).not.toHaveProperty('health');
          expect(output).not.toHaveProperty('axios');
          expect(output).not.toHaveProperty('metrics');
          expect(output).not.toHaveProperty('fires');
        }
        // It closed: deregistered, and the process ended on its own (execFile resolved).
        expect(await agent.api().agentServices()).not.toHaveProperty(serviceId);
      }
    },
    120_000,
  );
});
