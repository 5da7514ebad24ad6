import { DiscoveryError } from './discovery.error.js';
import { invalidSettingsMessage } from './error-messages.js';

export interface SettingsViolation {
  /** Dotted path of the offending field, e.g. `service.port`. */
  path: string;
  /** Human readable reasons, each starting with the path. */
  reasons: string[];
}

/** Settings or arguments failed validation; no request was sent. */
export class DiscoverySettingsError extends DiscoveryError {
  readonly violations: SettingsViolation[];

  constructor(violations: SettingsViolation[], subject = 'DiscoveryModule settings') {
    super(invalidSettingsMessage(subject, violations));
    this.violations = violations;
  }

  get paths(): string[] {
    return this.violations.map((v) => v.path);
  }
}
