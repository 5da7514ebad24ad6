import type { ConsulTransport } from '../lib/consul/consul.transport.js';
import { ConsulClient } from '../lib/consul/consul.client.js';
import { ConsulConnectionSettings } from '../lib/settings/discovery.settings.js';
import { InMemoryCatalog } from '../lib/testing/in-memory.catalog.js';
import { InMemoryTransport } from '../lib/testing/in-memory.transport.js';
import { startConsulAgent, stopAllAgents, type ConsulAgent } from './support/index.js';

// The Consul transaction a scheduled job's claim is made of: `check-session` on a lock key +
// `cas` of a record, through `writeFenced`, on the real 1.8.7 agent and on the in-memory double,
// which must answer alike. What the agent holds after each refused write is read back through
// its raw API.

let agent: ConsulAgent;

beforeAll(async () => {
  agent = await startConsulAgent();
});
afterAll(async () => {
  await stopAllAgents();
});

interface Fixture {
  transport: ConsulTransport;
  /** A passing TTL service, so that a session can be bound to its check. */
  register(serviceId: string): Promise<void>;
  close(): void;
}

const fixtures: Record<'consul' | 'in-memory', () => Fixture> = {
  consul: () => {
    const settings = Object.assign(new ConsulConnectionSettings(), {
      host: agent.bind,
      port: agent.httpPort,
    });
    const client = new ConsulClient(settings);
    return {
      transport: client,
      register: (serviceId) =>
        agent.api().registerService({
          Name: 'jobs',
          ID: serviceId,
          Port: 5000,
          Check: { TTL: '30s', Status: 'passing' },
        }),
      close: () => client.close(),
    };
  },
  'in-memory': () => {
    const catalog = new InMemoryCatalog();
    const transport = new InMemoryTransport(catalog);
    return {
      transport,
      register: (serviceId) =>
        transport.registerService({
          id: serviceId,
          name: 'jobs',
          port: 5000,
          tags: [],
          meta: {},
          check: { ttl: '30s', status: 'passing' },
        }),
      close: () => transport.close(),
    };
  },
};

describe.each(['consul', 'in-memory'] as const)('writeFenced on %s', (kind) => {
  it('commits all or nothing: answers the lock LockIndex; refuses a stale index, a foreign session, a released lock', async () => {
    const fixture = fixtures[kind]();
    const { transport } = fixture;
    const tag = `${kind}-${Date.now()}`;
    const lockKey = `test/locks/${tag}/1`;
    const key = `test/jobs/${tag}/report`;
    await fixture.register(`${tag}-a`);
    await fixture.register(`${tag}-b`);
    const [a, b] = await Promise.all(
      ['a', 'b'].map((s) =>
        transport.createSession({
          name: s,
          serviceCheckId: `service:${tag}-${s}`,
          lockDelay: '0s',
        }),
      ),
    );
    // The claim's write on this lock and record: session, the index it read, the new value.
    const write = (session: string, index: number, value: string) =>
      transport.writeFenced({ lockKey, session, key, index, value });
    const lock = await transport.lock(lockKey, a, '');
    expect(lock).toMatchObject({ acquired: true, lockIndex: 1 });

    // Created (index 0 = must not exist); the answer carries the lock's LockIndex.
    const first = await write(a, 0, 'v1');
    expect(first).toMatchObject({ committed: true, lockIndex: 1 });
    const created = await transport.readKey(key);
    expect(created).toEqual({
      lockIndex: 0,
      value: 'v1',
      modifyIndex: (first as { modifyIndex: number }).modifyIndex,
    });

    // Stale index: 409, nothing written.
    const stale = await write(a, 0, 'v2');
    expect(stale).toEqual({
      committed: false,
      reason: `failed to set key "${key}", index is stale`,
    });
    // A session that does not hold the lock, with the right index: 409, nothing written.
    const foreign = await write(b, created!.modifyIndex, 'v3');
    expect(foreign).toEqual({
      committed: false,
      reason: `failed session check for key "${lockKey}", current session "${a}" != "${b}"`,
    });
    expect(await transport.readKey(key)).toEqual(created);

    // The holder with the right index: committed, the record's index moves.
    const second = await write(a, created!.modifyIndex, 'v4');
    expect(second).toMatchObject({ committed: true, lockIndex: 1 });
    const after = await transport.readKey(key);
    expect(after?.value).toBe('v4');
    expect(after!.modifyIndex).toBeGreaterThan(created!.modifyIndex);

    // Released, then taken by b: a new LockIndex, and a's writes are refused.
    expect(await transport.unlock(lockKey, a)).toBe(true);
    const released = await write(a, after!.modifyIndex, 'v5');
    expect(released).toEqual({
      committed: false,
      reason: `failed session check for key "${lockKey}", current session "" != "${a}"`,
    });
    expect(await transport.lock(lockKey, b, '')).toMatchObject({ acquired: true, lockIndex: 2 });
    const taken = await write(b, after!.modifyIndex, 'v6');
    expect(taken).toMatchObject({ committed: true, lockIndex: 2 });

    // A lock key that does not exist, and a stale index: every failed operation is named.
    const missing = await transport.writeFenced({
      lockKey: `${lockKey}-none`,
      session: b,
      key,
      index: 0,
      value: 'v7',
    });
    expect(missing).toEqual({
      committed: false,
      reason:
        `failed to check session, key "${lockKey}-none" doesn't exist; ` +
        `failed to set key "${key}", index is stale`,
    });
    expect((await transport.readKey(key))?.value).toBe('v6');
    expect(await transport.readKey(`${key}-none`)).toBeUndefined();

    if (kind === 'consul') {
      // What the agent holds, through its raw API.
      const raw = await agent.api().request('GET', `/v1/kv/${key}`);
      const [entry] = raw.json as { Value: string }[];
      expect(Buffer.from(entry.Value, 'base64').toString()).toBe('v6');
    }
    fixture.close();
  });
});
