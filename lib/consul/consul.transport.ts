import type {
  BlockingReadOptions,
  CallOptions,
  FencedWrite,
  FencedWriteResult,
  KeyValue,
  LocalCheck,
  LockAttempt,
  LockEntry,
  ReadOptions,
  SessionDefinition,
} from './consul.client.js';
import type { AgentServiceDefinition, IndexedResult, RawHealthCheck } from './consul.types.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';

/**
 * What the module's classes use of Consul: the agent's registrations, health reads (blocking
 * queries with indexes), sessions and KV locks (exclusive sharding) and the client's lifetime.
 * `ConsulClient` implements it on a real agent; `@athomic/discovery/testing` implements it in
 * memory, so the same watches, registration state machine, sharding and HTTP client run on both.
 */
export interface ConsulTransport {
  /** Where requests go, for messages (never carries the token). */
  readonly target: string;
  /** Aborted by `close()`: whatever waits on Consul stops waiting. */
  readonly closeSignal: AbortSignal;
  readonly closed: boolean;
  registerService(definition: AgentServiceDefinition): Promise<void>;
  deregisterService(serviceId: string): Promise<void>;
  passCheck(checkId: string): Promise<void>;
  hasLocalService(serviceId: string): Promise<boolean>;
  localChecks(): Promise<LocalCheck[]>;
  healthyInstances(name: string, options?: ReadOptions): Promise<ServiceInstance[]>;
  watchHealthyInstances(
    name: string,
    options: BlockingReadOptions,
  ): Promise<IndexedResult<ServiceInstance[]>>;
  watchCheckStates(options: BlockingReadOptions): Promise<IndexedResult<RawHealthCheck[]>>;
  watchServiceNames(options: BlockingReadOptions): Promise<IndexedResult<Record<string, string[]>>>;
  // Sessions and KV locks, for exclusive sharding.
  createSession(session: SessionDefinition): Promise<string>;
  destroySession(id: string): Promise<void>;
  sessionExists(id: string, options?: CallOptions): Promise<boolean>;
  lock(key: string, session: string, value: string): Promise<LockAttempt>;
  unlock(key: string, session: string): Promise<boolean>;
  watchPrefix(prefix: string, options: BlockingReadOptions): Promise<IndexedResult<LockEntry[]>>;
  // Records written under a held lock, for scheduled jobs' claims.
  readKey(key: string, options?: CallOptions): Promise<KeyValue | undefined>;
  writeFenced(write: FencedWrite): Promise<FencedWriteResult>;
  /** Ends every request in flight; idempotent. */
  close(): void;
}
