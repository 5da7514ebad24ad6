import { randomUUID } from 'node:crypto';
import type {
  FencedWrite,
  FencedWriteResult,
  KeyValue,
  LockAttempt,
  LockEntry,
  SessionDefinition,
} from '../consul/consul.client.js';
import { ConsulResponseError } from '../errors/consul-response.error.js';
import { parseDuration } from '../protocol/duration.util.js';
import { serviceIdOfCheck, type InMemoryCatalog } from './in-memory.catalog.js';

interface Session {
  serviceId: string;
  lockDelayMs: number;
}

interface Key extends LockEntry {
  /** `performance.now()` before which nobody may acquire it (the lock-delay after an invalidation). */
  delayedUntil: number;
}

/**
 * Consul's sessions and KV locks as exclusive sharding uses them (the answers' texts are Consul
 * 1.8.7's; the facts and how each was checked are in the repository's Consul notes): a session is bound to its instance's check and
 * invalidated when that instance turns critical or leaves (behaviour `release`); invalidation
 * and destroy release its locks and start the lock-delay on them; an acquisition by a new holder
 * increments `LockIndex`, which only grows. Every write moves the catalog's index, so
 * `watchPrefix` blocking queries wake on it.
 */
export class InMemoryLocks {
  private readonly sessions = new Map<string, Session>();
  private readonly keys = new Map<string, Key>();
  /** Plain keys (scheduled jobs' records), apart from the lock keys. */
  private readonly records = new Map<string, { value: string; modifyIndex: number }>();
  /** The index of the KV store: its last write. */
  private kvIndex: number;

  constructor(private readonly catalog: InMemoryCatalog) {
    this.kvIndex = catalog.index;
    catalog.onChange(() => this.invalidateFailed());
  }

  get index(): number {
    return this.kvIndex;
  }

  createSession(session: SessionDefinition): string {
    const checkId = session.serviceCheckId;
    const serviceId = serviceIdOfCheck(checkId);
    const passing = this.catalog.isPassing(serviceId);
    if (passing !== true) {
      const why =
        passing === undefined
          ? `Missing check '${checkId}' registration`
          : `Check '${checkId}' is in critical state`;
      throw new ConsulResponseError('session.create', 500, why);
    }
    const id = randomUUID();
    this.sessions.set(id, { serviceId, lockDelayMs: parseDuration(session.lockDelay) ?? 0 });
    return id;
  }

  /** Releases its locks with the lock-delay, as every invalidation does. */
  destroySession(id: string): void {
    const session = this.sessions.get(id);
    if (!session) return;
    this.sessions.delete(id);
    const until = performance.now() + session.lockDelayMs;
    let changed = false;
    for (const key of this.keys.values()) {
      if (key.session !== id) continue;
      key.session = undefined;
      key.delayedUntil = until;
      key.modifyIndex = this.nextIndex();
      changed = true;
    }
    if (changed) this.catalog.commit();
  }

  sessionExists(id: string): boolean {
    return this.sessions.has(id);
  }

  lock(name: string, session: string, _value: string): LockAttempt {
    if (!this.sessions.has(session)) {
      return {
        acquired: false,
        reason: `invalid session "${session}"`,
      };
    }
    const key = this.keys.get(name) ?? { key: name, lockIndex: 0, modifyIndex: 0, delayedUntil: 0 };
    if (key.session !== undefined && key.session !== session) {
      return { acquired: false, reason: `failed to lock key "${name}", lock is already held` };
    }
    if (key.session === undefined && performance.now() < key.delayedUntil) {
      return { acquired: false, reason: `failed to lock key "${name}" due to lock delay` };
    }
    if (key.session !== session) key.lockIndex++;
    key.session = session;
    key.modifyIndex = this.nextIndex();
    this.keys.set(name, key);
    this.catalog.commit();
    return { acquired: true, lockIndex: key.lockIndex, modifyIndex: key.modifyIndex };
  }

  /** `true` when `session` held it (a release starts no lock-delay). */
  unlock(name: string, session: string): boolean {
    const key = this.keys.get(name);
    if (!key || key.session !== session) return false;
    key.session = undefined;
    key.modifyIndex = this.nextIndex();
    this.catalog.commit();
    return true;
  }

  /** A record, or a lock key (whose value the double does not keep). */
  read(name: string): KeyValue | undefined {
    const record = this.records.get(name);
    if (record) return { ...record, lockIndex: 0 };
    const lock = this.keys.get(name);
    return (
      lock && {
        value: '',
        modifyIndex: lock.modifyIndex,
        lockIndex: lock.lockIndex,
        session: lock.session,
      }
    );
  }

  /**
   * Consul's `/v1/txn` of `check-session` + `cas`: all or nothing; a refusal lists every failed
   * operation, in 1.8.7's words.
   */
  writeFenced(write: FencedWrite): FencedWriteResult {
    const lock = this.keys.get(write.lockKey);
    const record = this.records.get(write.key);
    const errors: string[] = [];
    if (!lock) {
      errors.push(`failed to check session, key "${write.lockKey}" doesn't exist`);
    } else if (lock.session !== write.session) {
      errors.push(
        `failed session check for key "${write.lockKey}", current session "${lock.session ?? ''}" != "${write.session}"`,
      );
    }
    if ((record?.modifyIndex ?? 0) !== write.index) {
      errors.push(`failed to set key "${write.key}", index is stale`);
    }
    if (!lock || errors.length > 0) return { committed: false, reason: errors.join('; ') };
    // Consul leaves an unchanged value's index as it was.
    if (record?.value !== write.value) {
      this.records.set(write.key, { value: write.value, modifyIndex: this.nextIndex() });
      this.catalog.commit();
    }
    return {
      committed: true,
      lockIndex: lock.lockIndex,
      modifyIndex: this.records.get(write.key)!.modifyIndex,
    };
  }

  entries(prefix: string): LockEntry[] {
    return [...this.keys.values()]
      .filter((key) => key.key.startsWith(prefix))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .map(({ key, session, lockIndex, modifyIndex }) => ({
        key,
        session,
        lockIndex,
        modifyIndex,
      }));
  }

  /** The next index a KV write takes: the one the catalog's commit is about to record. */
  private nextIndex(): number {
    this.kvIndex = this.catalog.index + 1;
    return this.kvIndex;
  }

  /** A session whose instance stopped passing or left is invalidated (Consul's `release`). */
  private invalidateFailed(): void {
    for (const [id, session] of this.sessions) {
      if (this.catalog.isPassing(session.serviceId) !== true) this.destroySession(id);
    }
  }
}
