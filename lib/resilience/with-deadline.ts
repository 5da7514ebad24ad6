/**
 * Settles with `work`'s value, or with `undefined` when it rejects or `ms` pass first. The timer is
 * unref'd and cleared: a teardown step waited on this way never keeps the process alive.
 */
export function withDeadline<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), Math.max(0, ms));
    timer.unref();
    work
      .then(
        (value) => resolve(value),
        () => resolve(undefined),
      )
      .finally(() => clearTimeout(timer));
  });
}
