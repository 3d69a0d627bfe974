/**
 * The request a read belongs to, as the read router sees it: who the caller is and
 * whether the request may write. Entered per HTTP request (the read-scope plugin).
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** What the current request has told the router. */
export interface ReadScope {
  /** The authenticated caller, once known. */
  userId: number | null;
  /** The request may write (not GET/HEAD/OPTIONS): its reads go to the primary. */
  writes: boolean;
}

const scopes = new AsyncLocalStorage<ReadScope>();

/** Runs `fn` (an HTTP request) in a scope the router reads the caller from. */
export function withScope<T>(scope: ReadScope, fn: () => T): T {
  return scopes.run(scope, fn);
}

/** The scope of the request under way, if any. */
export function currentScope(): ReadScope | undefined {
  return scopes.getStore();
}
