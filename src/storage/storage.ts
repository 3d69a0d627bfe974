/**
 * Where the bytes of uploaded scripts live. One interface, so an object store can
 * take PostgreSQL's place; today's implementation is `PgStorage` (script_contents).
 *
 * A script's bytes are named by the script and its owner (`ScriptRef`), never by a
 * path or anything a client sent. They are immutable: written once with the row,
 * read many times, gone with the row.
 *
 * An object store would implement `put` by uploading before the transaction commits
 * (an upload whose transaction then rolls back leaves an orphan object, which a
 * periodic sweep of keys without a row removes) and would delete objects after the
 * row's delete commits.
 */
import type { Readable } from 'node:stream';
import type { Database } from '../db/database.ts';

export interface ScriptRef {
  script_id: number;
  user_id: number;
}

export interface OpenedContent {
  /** The bytes, streamed: never more than one slice in memory. */
  stream: Readable;
  size: number;
}

export interface Storage {
  /**
   * Stores the bytes of a new script inside `tx`, the transaction that inserts its
   * row: both are committed, or neither.
   */
  put(tx: Database, ref: ScriptRef, content: Buffer): Promise<void>;
  /**
   * Opens a script's bytes for reading, or null when there are none (the script was
   * deleted meanwhile, or its bytes were never moved in). The first slice is read
   * before this resolves, so a missing script is known before an answer starts.
   */
  open(ref: ScriptRef): Promise<OpenedContent | null>;
}
