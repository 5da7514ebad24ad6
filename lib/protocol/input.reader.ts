import {
  Allow,
  IsOptional,
  ValidateNested,
  validateSync,
  ValidationTypes,
  type ValidationError,
} from 'class-validator';
import type { SettingsViolation } from '../errors/discovery-settings.error.js';

const unknownKey = (path: string): string => `${path} is not a known setting`;

/** Collects violations while settings or arguments are read, so all of them are reported at once. */
export class ViolationCollector {
  private readonly byPath = new Map<string, string[]>();

  add(path: string, reason: string): void {
    const reasons = this.byPath.get(path) ?? [];
    if (!reasons.includes(reason)) reasons.push(reason);
    this.byPath.set(path, reasons);
  }

  /**
   * Runs class-validator on `target` and records every failed constraint under its full path;
   * keys without a decorator are unknown keys.
   */
  validate(target: object, path: string): void {
    const options = { whitelist: true, forbidNonWhitelisted: true, forbidUnknownValues: false };
    for (const error of validateSync(target, options)) this.addValidationError(error, path);
  }

  get violations(): SettingsViolation[] {
    return [...this.byPath].map(([path, reasons]) => ({ path, reasons }));
  }

  get empty(): boolean {
    return this.byPath.size === 0;
  }

  private addValidationError(error: ValidationError, parent: string): void {
    const path = parent ? `${parent}.${error.property}` : error.property;
    if (error.constraints?.[ValidationTypes.WHITELIST]) {
      this.add(path, unknownKey(path));
      return;
    }
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

/** Reads the raw value of one property (at `path`) into what the property holds. */
type PropertyReader = (
  raw: unknown,
  path: string,
  out: ViolationCollector,
  current: unknown,
) => unknown;

const readersByClass = new WeakMap<object, Map<string, PropertyReader>>();

function setReader(prototype: object, key: string | symbol, read: PropertyReader): void {
  const readers = readersByClass.get(prototype) ?? new Map<string, PropertyReader>();
  readers.set(key as string, read);
  readersByClass.set(prototype, readers);
}

/**
 * A nested settings object: the given keys are merged over the property's default instance (its
 * initializer), which is then validated with its parent.
 */
export const Nested =
  (): PropertyDecorator =>
  (prototype, key): void => {
    ValidateNested()(prototype, key);
    setReader(prototype, key, (raw, path, out, current) =>
      readInto(current as object, raw, path, out),
    );
  };

/**
 * An optional nested settings object, absent by default: when given, its keys are merged over a
 * new `cls` (whose initializers hold the defaults), validated with its parent.
 */
export const OptionalNested =
  (cls: new () => object): PropertyDecorator =>
  (prototype, key): void => {
    IsOptional()(prototype, key);
    ValidateNested()(prototype, key);
    setReader(prototype, key, (raw, path, out) => readInto(new cls(), raw, path, out));
  };

/** A property whose given value `read` reads and validates itself; it replaces the default. */
export const ReadWith =
  (read: (raw: unknown, path: string, out: ViolationCollector) => unknown): PropertyDecorator =>
  (prototype, key): void => {
    Allow()(prototype, key);
    setReader(prototype, key, read);
  };

/**
 * Copies the keys of `raw` (`path` '' is the root) onto `target`, whose initializers hold the
 * defaults; an `undefined` value keeps the default. Unknown keys are copied too, so that the
 * whitelist of `ViolationCollector.validate` reports them.
 */
export function readInto<T extends object>(
  target: T,
  raw: unknown,
  path: string,
  out: ViolationCollector,
): T {
  if (raw === undefined) return target;
  if (!isPlainObject(raw)) {
    const name = path || 'options';
    out.add(name, `${name} must be an object`);
    return target;
  }
  const readers = readersByClass.get(Object.getPrototypeOf(target) as object);
  const fields = target as Record<string, unknown>;
  for (const [key, value] of Object.entries(raw)) {
    const at = path ? `${path}.${key}` : key;
    // class-validator's whitelist looks keys up in a plain object, so the names of
    // Object.prototype's members (`__proto__`, `constructor`, …) pass it; assigning them could
    // also replace the target's prototype.
    if (key in Object.prototype) out.add(at, unknownKey(at));
    else if (value !== undefined) {
      const read = readers?.get(key);
      fields[key] = read ? read(value, at, out, fields[key]) : value;
    }
  }
  return target;
}

/** Copies tags and meta so later mutation by the caller cannot change what was validated. */
export function copyTags(tags: readonly string[]): string[] {
  return [...tags];
}

export function copyMeta(meta: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(meta));
}
