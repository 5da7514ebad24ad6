import type { EventEmitter } from 'node:events';

/** The subset of the `consul` 2.x client we call, typed precisely (its own types are loose). */
export interface RawConsulClient {
  agent: {
    service: {
      list(opts: RawCallOptions): Promise<[RawResponse, Record<string, unknown>]>;
      register(opts: RawCallOptions & { body?: never } & Record<string, unknown>): Promise<unknown>;
      deregister(opts: RawCallOptions & { id: string }): Promise<unknown>;
    };
    check: { pass(opts: RawCallOptions & { id: string; note?: string }): Promise<unknown> };
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
  destroy(): void;
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
