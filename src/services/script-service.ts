/** Uploads and deletions: a row and a file that must not outlive each other. */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import {
  ForbiddenError,
  NotFoundError,
  PayloadTooLargeError,
  UnsupportedFileTypeError,
  ValidationError,
} from '../domain/errors.js';
import { type Script, sanitizeFilename, scriptExtension } from '../domain/script.js';
import type { Repositories } from '../repositories/index.js';
import type { ScriptFilters, ScriptSort, ScriptWithUser } from '../repositories/script-repository.js';
import type { Storage } from '../storage/file-storage.js';
import type { Principal } from './auth-service.js';
import { fetchPage, type Page, type PageRequest } from './paging.js';

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

export class ScriptService {
  constructor(
    private readonly repos: Repositories,
    private readonly storage: Storage,
    private readonly maxUploadBytes: number,
    private readonly log: Logger,
  ) {}

  /**
   * Stores an uploaded file under a generated name and records it. The client's
   * name is kept only as sanitised display text. Whatever fails, no file is left
   * without a row.
   */
  async upload(userId: number, upload: Upload): Promise<Script> {
    const extension = scriptExtension(upload.filename);
    if (extension === null) {
      upload.stream.resume(); // drain, so the connection can answer
      throw new UnsupportedFileTypeError('only .py, .js and .ts scripts are accepted');
    }
    // An error of the request stream is the client's (cut off, malformed); one of the disk is ours.
    // The parser may have failed the stream already (the whole body arrived before this handler ran).
    let streamError: unknown = upload.stream.errored ?? undefined;
    upload.stream.once('error', (error) => {
      streamError = error;
    });
    let stored: Awaited<ReturnType<Storage['save']>>;
    try {
      stored = await this.storage.save(upload.stream, extension);
    } catch (error) {
      if ((error as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw this.tooLarge();
      if (streamError !== undefined)
        throw ValidationError.field(
          '/file',
          'the upload was cut off or is not valid multipart data',
          'MALFORMED_UPLOAD',
        );
      throw error;
    }
    try {
      if (upload.stream.truncated) throw this.tooLarge();
      if (stored.size === 0) throw ValidationError.field('/file', 'must not be empty', 'EMPTY_FILE');
      return await this.repos.scripts.create({
        user_id: userId,
        filename: stored.key.split('/').pop()!,
        original_filename: sanitizeFilename(upload.filename),
        file_path: stored.key,
        file_size: stored.size,
        file_extension: extension,
        sha256: stored.sha256,
      });
    } catch (error) {
      await this.storage.remove(stored.key);
      throw error;
    }
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
      (page) => this.repos.scripts.listPage(filters, order, page),
      (cursor, limit) => this.repos.scripts.listAfter(filters, order, cursor, limit),
    );
  }

  /** Everyone's scripts created in the last `days` (7), newest first, with their owners (admin). */
  async listRecent(query: { days?: number; limit?: number }): Promise<ScriptWithUser[]> {
    const since = new Date(Date.now() - (query.days ?? RECENT_DAYS_DEFAULT) * DAY_MS);
    return this.repos.scripts.listRecentWithUser(since, query.limit ?? RECENT_LIMIT_DEFAULT);
  }

  /** Deletes an idle script's row, then its file. */
  async delete(id: number, ownerId?: number): Promise<void> {
    const { file_path } = await this.repos.scripts.delete(id, ownerId);
    await this.storage
      .remove(file_path)
      .catch((err) => this.log.warn({ err, key: file_path }, 'could not remove a script file'));
  }

  /**
   * The stored bytes and the name to offer them under. A script whose file is gone
   * (deleted concurrently, or lost) is NOT_FOUND, known before any byte is sent.
   */
  async content(id: number, ownerId?: number): Promise<{ stream: Readable; filename: string; size: number }> {
    const file = await this.repos.scripts.getFile(id, ownerId);
    const opened = await this.storage.open(file.file_path);
    if (opened === null) {
      this.log.warn({ script_id: id, key: file.file_path }, 'the file of a script is missing');
      throw new NotFoundError('script file', 'the file of this script is missing');
    }
    return { stream: opened.stream, filename: file.original_filename, size: opened.size };
  }

  private tooLarge(): PayloadTooLargeError {
    return new PayloadTooLargeError(`a script may be at most ${this.maxUploadBytes} bytes`);
  }
}
