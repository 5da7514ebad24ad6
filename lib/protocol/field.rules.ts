import {
  ArrayMaxSize,
  IsArray,
  IsInt,
  IsNotEmpty,
  isFQDN,
  isIP,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
  registerDecorator,
  type ValidationOptions,
} from 'class-validator';
import { isPositiveDuration } from './duration.util.js';

export const SERVICE_NAME_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
export const SERVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
export const DATACENTER_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Consul's limit on meta pairs per service. */
export const MAX_META_PAIRS = 64;
export const META_KEY_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
export const RESERVED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const TCP_TARGET = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})$/;

function define(
  name: string,
  message: string,
  test: (value: unknown) => boolean,
  options?: ValidationOptions,
): PropertyDecorator {
  return (target, propertyName) =>
    registerDecorator({
      name,
      target: target.constructor,
      propertyName: propertyName as string,
      options: { message, ...options },
      validator: { validate: (value: unknown) => test(value) },
    });
}

export const isHost = (value: unknown): boolean =>
  typeof value === 'string' &&
  value.length <= 253 &&
  (isIP(value) || isFQDN(value, { require_tld: false, allow_underscores: false }));

export const IsDuration = (options?: ValidationOptions) =>
  define(
    'isDuration',
    '$property must be a positive duration like 500ms, 10s, 1m or 1h',
    isPositiveDuration,
    options,
  );

export const IsHost = (options?: ValidationOptions) =>
  define('isHost', '$property must be an IP address or a host name', isHost, options);

export const IsTcpTarget = (options?: ValidationOptions) =>
  define(
    'isTcpTarget',
    '$property must be host:port with a port from 1 to 65535',
    (value) => {
      const match = typeof value === 'string' ? TCP_TARGET.exec(value) : null;
      return !!match && Number(match[2]) >= 1 && Number(match[2]) <= 65535;
    },
    options,
  );

export const IsServiceMeta = (options?: ValidationOptions) =>
  define(
    'isServiceMeta',
    '$property must hold at most 64 pairs; keys match ^[A-Za-z0-9_-]{1,128}$ (not __proto__, constructor or prototype); values are strings of at most 512 characters',
    (value) => {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
      const entries = Object.entries(value as Record<string, unknown>);
      return (
        Object.getPrototypeOf(value) === Object.prototype &&
        entries.length <= MAX_META_PAIRS &&
        entries.every(
          ([k, v]) =>
            META_KEY_PATTERN.test(k) &&
            !RESERVED_KEYS.has(k) &&
            typeof v === 'string' &&
            v.length <= 512,
        )
      );
    },
    options,
  );

export const IsHttpHeaderMap = (options?: ValidationOptions) =>
  define(
    'isHttpHeaderMap',
    '$property must map header names to arrays of strings',
    (value) =>
      typeof value === 'object' &&
      value !== null &&
      !Array.isArray(value) &&
      Object.entries(value as Record<string, unknown>).every(
        ([k, v]) =>
          /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(k) &&
          !RESERVED_KEYS.has(k) &&
          Array.isArray(v) &&
          v.every((s) => typeof s === 'string'),
      ),
    options,
  );

/** Several class-validator decorators as one, so settings and arguments share each field's rule. */
const compose =
  (...decorators: PropertyDecorator[]): PropertyDecorator =>
  (target, key) => {
    for (const decorate of decorators) decorate(target, key);
  };

export const IsPort = (): PropertyDecorator => compose(IsInt(), Min(1), Max(65535));

export const IsServiceName = (): PropertyDecorator =>
  compose(
    IsString(),
    Matches(SERVICE_NAME_PATTERN, {
      message: '$property must be a DNS label (letters, digits, hyphens; at most 63)',
    }),
  );

export const IsServiceId = (): PropertyDecorator =>
  compose(
    IsString(),
    Matches(SERVICE_ID_PATTERN, {
      message: '$property must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$',
    }),
  );

export const IsServiceTags = (): PropertyDecorator =>
  compose(
    IsArray(),
    ArrayMaxSize(64),
    IsString({ each: true }),
    IsNotEmpty({ each: true }),
    MaxLength(255, { each: true }),
  );

export const IsDatacenter = (): PropertyDecorator =>
  compose(
    IsString(),
    Matches(DATACENTER_PATTERN, { message: '$property must be a datacenter name' }),
  );
