import { validateSync, type ValidationError } from 'class-validator';
import type { SettingsViolation } from '../errors/discovery-settings.error.js';
import {
  HEALTH_CHECK_KEYS,
  HEALTH_CHECK_KINDS,
  type HealthCheckSettings,
} from './health-check.settings.js';

type Ctor<T> = new () => T;

/** Collects violations while settings or arguments are read, so all of them are reported at once. */
export class ViolationCollector {
  private readonly byPath = new Map<string, string[]>();

  add(path: string, reason: string): void {
    const reasons = this.byPath.get(path) ?? [];
    if (!reasons.includes(reason)) reasons.push(reason);
    this.byPath.set(path, reasons);
  }

  /** Runs class-validator on `target` and records every failed constraint under its full path. */
  validate(target: object, path: string): void {
    for (const error of validateSync(target, { forbidUnknownValues: false })) {
      this.addValidationError(error, path);
    }
  }

  get violations(): SettingsViolation[] {
    return [...this.byPath].map(([path, reasons]) => ({ path, reasons }));
  }

  get empty(): boolean {
    return this.byPath.size === 0;
  }

  private addValidationError(error: ValidationError, parent: string): void {
    const path = parent ? `${parent}.${error.property}` : error.property;
    const bare = new RegExp(`\\b${error.property}\\b`);
    for (const message of Object.values(error.constraints ?? {})) {
      this.add(path, bare.test(message) ? message.replace(bare, path) : `${path}: ${message}`);
    }
    for (const child of error.children ?? []) this.addValidationError(child, path);
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Reads one settings object (`path` '' is the root): unknown keys and a non-object are violations; known keys that are
 * not `undefined` are copied over `defaults` onto a fresh instance of `cls`.
 */
export function readSection<T extends object>(
  raw: unknown,
  path: string,
  cls: Ctor<T>,
  keys: readonly string[],
  defaults: Partial<T>,
  out: ViolationCollector,
): T {
  const section = Object.assign(new cls(), defaults);
  if (raw === undefined) return section;
  if (!isPlainObject(raw)) {
    const name = path || 'options';
    out.add(name, `${name} must be an object`);
    return section;
  }
  for (const key of Object.keys(raw)) {
    const at = path ? `${path}.${key}` : key;
    if (!keys.includes(key)) out.add(at, `${at} is not a known setting`);
  }
  for (const key of keys) {
    if (Object.hasOwn(raw, key) && raw[key] !== undefined) {
      (section as Record<string, unknown>)[key] = raw[key];
    }
  }
  return section;
}

/** A health check is exactly one of `http`, `tcp` or `ttl`, with that kind's fields only. */
export function readHealthCheck(
  raw: unknown,
  path: string,
  out: ViolationCollector,
): HealthCheckSettings | undefined {
  if (!isPlainObject(raw)) {
    out.add(path, `${path} must be an object with one of http, tcp or ttl`);
    return undefined;
  }
  const kinds = (Object.keys(HEALTH_CHECK_KINDS) as (keyof typeof HEALTH_CHECK_KINDS)[]).filter(
    (kind) => Object.hasOwn(raw, kind),
  );
  if (kinds.length !== 1) {
    out.add(path, `${path} must have exactly one of http, tcp or ttl`);
    return undefined;
  }
  const kind = kinds[0];
  const check: HealthCheckSettings = readSection<HealthCheckSettings>(
    raw,
    path,
    HEALTH_CHECK_KINDS[kind],
    HEALTH_CHECK_KEYS[kind],
    {},
    out,
  );
  out.validate(check, path);
  return check;
}

/** Copies tags and meta so later mutation by the caller cannot change what was validated. */
export function copyTags(tags: readonly string[]): string[] {
  return [...tags];
}

export function copyMeta(meta: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(meta));
}
