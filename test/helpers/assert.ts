/** Assertions tap lacks a typed form of. */
import type { Test } from 'tap';

/** Asserts `promise` rejects with an instance of `type` whose fields match `fields`; returns the error. */
export async function rejectsWith<E extends Error>(
  t: Test,
  promise: Promise<unknown>,
  // biome-ignore lint/suspicious/noExplicitAny: any constructor signature
  type: abstract new (...args: any[]) => E,
  fields: Record<string, unknown> = {},
): Promise<E | undefined> {
  try {
    await promise;
  } catch (error) {
    t.type(error, type, `rejects with ${type.name}`);
    t.match(error, fields);
    return error as E;
  }
  t.fail(`expected a rejection with ${type.name}`);
  return undefined;
}
