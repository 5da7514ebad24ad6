import type { EventEmitter } from 'node:events';

/** The subset of the `consul` 2.x client we call, typed precisely (its own types are loose). */
export interface RawConsulClient {
  agent: {
    service: {
      list(opts: RawCallOptions): Promise<[RawResponse, Record<string, unknown>]>;
      register(opts: RawCallOptions & { body?: never } & Record<string, unknown>): Promise<unknown>;
      deregister(opts: RawCallOptions & { id: string }): Promise<unknown>;
    };
    check: {
      pass(opts: RawCallOptions & { id: string; note?: string }): Promise<unknown>;
      list(opts: RawCallOptions): Promise<[RawResponse, Record<string, RawHealthCheck>]>;
    };
  };
  health: {
    service(
      opts: RawCallOptions & RawReadOptions & { service: string; passing?: boolean; tag?: string },
    ): Promise<[RawResponse, RawHealthEntry[]]>;
    state(
      opts: RawCallOptions & RawReadOptions & { state: 'any' },
    ): Promise<[RawResponse, RawHealthCheck[]]>;
  };
  catalog: {
    service: {
      list(opts: RawCallOptions & RawReadOptions): Promise<[RawResponse, Record<string, string[]>]>;
    };
  };
  kv: {
    get(
      opts: RawCallOptions & RawReadOptions & { key: string; recurse: true },
    ): Promise<[RawResponse, RawKvEntry[] | undefined]>;
    /** One key: its entry, or `undefined` when it does not exist (404). */
    get(
      opts: RawCallOptions & RawReadOptions & { key: string },
    ): Promise<[RawResponse, RawKvEntry | undefined]>;
    set(
      opts: RawCallOptions & { key: string; value: string; acquire?: string; release?: string },
    ): Promise<[RawResponse, boolean]>;
  };
  session: {
    destroy(opts: RawCallOptions & { id: string }): Promise<unknown>;
    info(opts: RawCallOptions & { id: string }): Promise<[RawResponse, RawSession[] | null]>;
  };
  transaction: {
    create(
      operations: RawTxnOperation[],
      opts: RawCallOptions,
    ): Promise<[RawResponse, RawTxnResult]>;
  };
  /**
   * The client's generic PUT (papi), for bodies its own methods would rewrite: `session.create`
   * copies only some fields and drops `NodeChecks`/`ServiceChecks`.
   */
  _put(
    request: RawRequest,
    ...callbacks: ((request: RawPapiRequest, next: RawNext) => void)[]
  ): Promise<unknown>;
  destroy(): void;
}

/** A request as papi takes it. */
export interface RawRequest {
  name: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  type: 'json';
  body: unknown;
  ctx: CancelContext;
  timeout: number;
}

export interface RawPapiRequest {
  err?: Error & { response?: RawResponse };
  res?: RawResponse & { body?: unknown };
  ctx?: CancelContext;
}

export type RawNext = (stop: boolean, error?: Error, value?: unknown) => void;

/** `GET /v1/kv/<prefix>?recurse`: one key. */
export interface RawKvEntry {
  Key: string;
  /** Decoded by the client. */
  Value: string | null;
  /** The session holding the lock, if any. */
  Session?: string;
  /** Acquisitions so far: the fencing token. */
  LockIndex: number;
  ModifyIndex: number;
}

export interface RawSession {
  ID: string;
  Name: string;
  Node: string;
  LockDelay: number;
  Behavior: string;
}

/** `/v1/txn` operations we send (the KV verbs). */
export interface RawTxnOperation {
  KV: {
    Verb: 'lock' | 'unlock' | 'get' | 'check-session' | 'cas';
    Key: string;
    Value?: string;
    Session?: string;
    /** `cas`: the `ModifyIndex` the key must still have (0 = it must not exist). */
    Index?: number;
  };
}

export interface RawTxnResult {
  Results: { KV: RawKvEntry }[] | null;
  Errors: { OpIndex: number; What: string }[] | null;
}

export interface CancelContext extends EventEmitter {
  /** Makes the client resolve `[response, body]` so the `X-Consul-Index` header can be read. */
  includeResponse?: boolean;
}

export interface RawCallOptions {
  ctx: CancelContext;
  timeout: number;
}

export interface RawReadOptions {
  dc?: string;
  index?: string;
  wait?: string;
  stale?: boolean;
  consistent?: boolean;
}

export interface RawResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
}

export interface RawHealthCheck {
  Node: string;
  CheckID: string;
  /** `passing`, `warning`, `critical` or `maintenance`. */
  Status: string;
  ServiceID: string;
  ServiceName: string;
  ModifyIndex?: number;
}

export interface RawHealthEntry {
  Node: { Node: string; Address: string; Datacenter?: string };
  Service: {
    ID: string;
    Service: string;
    Tags: string[] | null;
    Address: string;
    Port: number;
    Meta: Record<string, string> | null;
  };
  Checks: RawHealthCheck[];
}

/** A blocking-query answer: the body and the `X-Consul-Index` it came with. */
export interface IndexedResult<T> {
  value: T;
  index: number;
}

/** Registration as the agent's `PUT /v1/agent/service/register` takes it (client's key style). */
export interface AgentServiceDefinition {
  name: string;
  id: string;
  port: number;
  address?: string;
  tags: string[];
  meta: Record<string, string>;
  check?: AgentCheckDefinition;
}

export type AgentCheckDefinition = Record<string, string | boolean | Record<string, string[]>>;
