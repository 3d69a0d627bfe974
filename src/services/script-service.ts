/** Uploads and deletions: a row and a file that must not outlive each other. */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { PayloadTooLargeError, UnsupportedFileTypeError, ValidationError } from '../domain/errors.js';
import { type Script, sanitizeFilename, scriptExtension } from '../domain/script.js';
import type { Repositories } from '../repositories/index.js';
import type { Storage } from '../storage/file-storage.js';

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

  /** Deletes an idle script's row, then its file. */
  async delete(id: number, ownerId?: number): Promise<void> {
    const { file_path } = await this.repos.scripts.delete(id, ownerId);
    await this.storage
      .remove(file_path)
      .catch((err) => this.log.warn({ err, key: file_path }, 'could not remove a script file'));
  }

  /** The stored bytes and the name to offer them under. */
  async content(id: number, ownerId?: number) {
    const file = await this.repos.scripts.getFile(id, ownerId);
    return {
      stream: this.storage.open(file.file_path),
      filename: file.original_filename,
      size: file.file_size,
    };
  }

  private tooLarge(): PayloadTooLargeError {
    return new PayloadTooLargeError(`a script may be at most ${this.maxUploadBytes} bytes`);
  }
}
