/** Uploads, listings, deletions and the bytes of scripts. */
import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import {
  ForbiddenError,
  NotFoundError,
  PayloadTooLargeError,
  UnsupportedFileTypeError,
  ValidationError,
} from '../domain/errors.ts';
import { fetchPage, type Page, type PageRequest } from '../domain/paging.ts';
import { type Script, type ScriptSort, sanitizeFilename, scriptExtension } from '../domain/script.ts';
import type { Repositories } from '../repositories/index.ts';
import type { ScriptFilters, ScriptWithUser } from '../repositories/script-listings.ts';
import type { Storage } from '../storage/storage.ts';
import { type Principal, scopeOf } from './auth-service.ts';

/** GET /scripts: filters, whose scripts, order, and the page. */
export interface ScriptListQuery extends Omit<ScriptFilters, 'user_id'>, PageRequest {
  /** Admins only: this user's scripts. */
  user_id?: number;
  /** Admins only: everyone's scripts. */
  all?: boolean;
  sort?: ScriptSort;
}

const DAY_MS = 86_400_000;
const RECENT_DAYS_DEFAULT = 7;
const RECENT_LIMIT_DEFAULT = 100;

export interface Upload {
  filename: string;
  stream: Readable & { truncated?: boolean };
}

/** What one account may upload: per script, and all its scripts together. */
export interface UploadLimits {
  /** MAX_UPLOAD_BYTES: one script. */
  maxUploadBytes: number;
  /** MAX_SCRIPTS_PER_USER. */
  maxScripts: number;
  /** MAX_STORAGE_BYTES_PER_USER: the sizes of all the account's scripts. */
  maxStorageBytes: number;
}

export class ScriptService {
  private readonly maxUploadBytes: number;

  private readonly repos: Repositories;
  private readonly storage: Storage;
  private readonly limits: UploadLimits;
  private readonly log: Logger;

  constructor(repos: Repositories, storage: Storage, limits: UploadLimits, log: Logger) {
    this.repos = repos;
    this.storage = storage;
    this.limits = limits;
    this.log = log;
    this.maxUploadBytes = limits.maxUploadBytes;
  }

  /**
   * Records an uploaded script: its row and its bytes in one transaction, so an
   * upload is all or nothing. The client's name is kept only as sanitised display
   * text. The bytes are gathered in memory first (at most MAX_UPLOAD_BYTES: the
   * multipart parser stops the file there): PostgreSQL takes a bytea parameter
   * whole, and the size and SHA-256 of the row must be known before the insert.
   * The account's quotas (count and bytes, UploadLimits) are part of that insert.
   */
  async upload(userId: number, upload: Upload): Promise<Script> {
    const extension = scriptExtension(upload.filename);
    if (extension === null) {
      upload.stream.resume(); // drain, so the connection can answer
      throw new UnsupportedFileTypeError('only .py, .js and .ts scripts are accepted');
    }
    let content: Buffer;
    try {
      content = await readBounded(upload.stream, this.maxUploadBytes);
    } catch (error) {
      if (error instanceof PayloadTooLargeError) throw this.tooLarge();
      if ((error as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw this.tooLarge();
      // An error of the request stream is the client's: cut off, or malformed.
      throw ValidationError.field(
        '/file',
        'the upload was cut off or is not valid multipart data',
        'MALFORMED_UPLOAD',
      );
    }
    if (upload.stream.truncated) throw this.tooLarge();
    if (content.length === 0) throw ValidationError.field('/file', 'must not be empty', 'EMPTY_FILE');
    const sha256 = createHash('sha256').update(content).digest('hex');
    return this.repos.transaction(async (tx) => {
      // The quotas are checked by the insert itself, under a lock on the owner (see there).
      const script = await tx.scripts.createWithinQuota(
        {
          user_id: userId,
          filename: `${randomUUID()}${extension}`,
          original_filename: sanitizeFilename(upload.filename),
          file_size: content.length,
          file_extension: extension,
          sha256,
        },
        { scripts: this.limits.maxScripts, bytes: this.limits.maxStorageBytes },
      );
      await this.storage.put(tx.db, { script_id: script.id, user_id: userId }, content);
      return script;
    });
  }

  /**
   * GET /scripts: a user lists its own scripts; an admin too by default, one user's
   * with `user_id`, or everyone's with `all` (not both). FORBIDDEN for a user who asks
   * for another user's (`user_id`) or everyone's (`all=true`); asking for its own
   * (`user_id` its id, `all=false`) is what it gets anyway.
   */
  async list(principal: Principal, query: ScriptListQuery): Promise<Page<Script>> {
    const { user_id, all, sort, ...rest } = query;
    const othersAsked = all === true || (user_id !== undefined && user_id !== principal.user_id);
    if (othersAsked && principal.role !== 'admin')
      throw new ForbiddenError('only admins may list scripts of other users');
    if (user_id !== undefined && all === true)
      throw ValidationError.field('/all', 'cannot be combined with user_id');
    const filters: ScriptFilters = {
      status: rest.status,
      min_execution_time: rest.min_execution_time,
      created_since: rest.created_since,
      user_id: all === true ? undefined : (user_id ?? principal.user_id),
    };
    const order = sort ?? '-created_at';
    return fetchPage(
      rest,
      (page) => this.repos.scriptListings.listPage(filters, order, page),
      (cursor, limit) => this.repos.scriptListings.listAfter(filters, order, cursor, limit),
    );
  }

  /** Everyone's scripts created in the last `days` (7), newest first, with their owners (admin). */
  async listRecent(query: { days?: number; limit?: number }): Promise<ScriptWithUser[]> {
    const since = new Date(Date.now() - (query.days ?? RECENT_DAYS_DEFAULT) * DAY_MS);
    return this.repos.scriptListings.listRecentWithUser(since, query.limit ?? RECENT_LIMIT_DEFAULT);
  }

  /**
   * Changes what a client may change of a script: today `ibkr_access`. Only the owner
   * may give a script the owner's IBKR credentials (an admin turning it on for someone
   * else's script is FORBIDDEN); an admin may turn it off on anyone's.
   */
  async update(principal: Principal, id: number, patch: { ibkr_access?: boolean }): Promise<Script> {
    const scope = scopeOf(principal);
    if (patch.ibkr_access === undefined) return this.repos.scripts.getById(id, scope);
    if (patch.ibkr_access && principal.role === 'admin') {
      const script = await this.repos.scripts.getById(id);
      if (script.user_id !== principal.user_id)
        throw new ForbiddenError("only a script's owner may give it the owner's IBKR credentials");
    }
    return this.repos.scripts.setIbkrAccess(id, patch.ibkr_access, scope);
  }

  /** One script: the principal's own (admins: anyone's); someone else's is NOT_FOUND. */
  get(principal: Principal, id: number): Promise<Script> {
    return this.repos.scripts.getById(id, scopeOf(principal));
  }

  /** Scripts running now: the principal's own (admins: everyone's). */
  listRunning(principal: Principal): Promise<Script[]> {
    return this.repos.scriptListings.listRunning(scopeOf(principal));
  }

  /** Deletes an idle script; its bytes go with the row (cascade). */
  async delete(id: number, ownerId?: number): Promise<void> {
    await this.repos.scripts.delete(id, ownerId);
  }

  /**
   * The stored bytes and the name to offer them under. A script whose bytes are
   * missing (deleted concurrently, or never moved in from STORAGE_DIR) is NOT_FOUND,
   * known before any byte is sent.
   */
  async content(id: number, ownerId?: number): Promise<{ stream: Readable; filename: string; size: number }> {
    const file = await this.repos.scripts.getFile(id, ownerId);
    const opened = await this.storage.open({ script_id: id, user_id: file.user_id });
    if (opened === null) {
      this.log.warn({ script_id: id }, 'the content of a script is missing');
      throw new NotFoundError('script file', 'the file of this script is missing');
    }
    return { stream: opened.stream, filename: file.original_filename, size: opened.size };
  }

  private tooLarge(): PayloadTooLargeError {
    return new PayloadTooLargeError(`a script may be at most ${this.maxUploadBytes} bytes`);
  }
}

/**
 * The whole stream, refusing more than `max` bytes (PayloadTooLargeError) without
 * holding them: the excess is drained, not kept.
 */
export async function readBounded(stream: Readable, max: number): Promise<Buffer> {
  if (stream.errored) throw stream.errored;
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) over = true;
    if (!over) chunks.push(chunk);
  }
  if (over) throw new PayloadTooLargeError(`more than ${max} bytes`);
  return Buffer.concat(chunks, size);
}
