/**
 * Where uploaded scripts live: a folder (STORAGE_DIR), under generated names.
 * Callers hold a storage key (`ab/<uuid>.py`), never a path built from client
 * input; `pathOf` refuses any key that would leave the folder. One interface, so
 * an object store can take its place.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { type FileHandle, mkdir, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ScriptExtension } from '../domain/script.js';

export interface StoredFile {
  key: string;
  size: number;
  sha256: string;
}

export interface OpenedFile {
  stream: Readable;
  size: number;
}

export interface Storage {
  /** Streams `source` into a new file; on any error nothing is left behind. */
  save(source: Readable, extension: ScriptExtension): Promise<StoredFile>;
  /**
   * Opens a stored file for reading: its bytes and its size on disk, or null when the
   * file is missing (removed concurrently, or lost). The file is open when this
   * resolves, so a missing file is known before an answer has started.
   */
  open(key: string): Promise<OpenedFile | null>;
  /** Removes a file; a missing one is not an error. */
  remove(key: string): Promise<void>;
  /** The absolute path of a key, for the executor. */
  pathOf(key: string): string;
}

const KEY_PATTERN = /^[0-9a-f]{2}\/[0-9a-f-]{36}\.(py|js|ts)$/;

export class FileStorage implements Storage {
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /** Creates the folder; readable by the unprivileged user scripts run as (they get a copy, not this path). */
  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
  }

  async save(source: Readable, extension: ScriptExtension): Promise<StoredFile> {
    const id = randomUUID();
    const key = `${id.slice(0, 2)}/${id}${extension}`;
    const file = this.pathOf(key);
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const hash = createHash('sha256');
    let size = 0;
    const measure = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        hash.update(chunk);
        done(null, chunk);
      },
    });
    // Opened (created) before streaming, so that the cleanup below never races the open:
    // a stream that fails early would otherwise create the file after we removed it.
    // 'wx': never overwrite, even if a UUID ever repeated.
    const handle = await open(file, 'wx', 0o600);
    try {
      await pipeline(source, measure, createWriteStream('', { fd: handle }));
    } catch (error) {
      await rm(file, { force: true });
      throw error;
    }
    return { key, size, sha256: hash.digest('hex') };
  }

  async open(key: string): Promise<OpenedFile | null> {
    let handle: FileHandle;
    try {
      handle = await open(this.pathOf(key), 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
    try {
      const { size } = await handle.stat();
      // The stream owns the descriptor from here: it closes it at its end or when destroyed.
      return { stream: handle.createReadStream(), size };
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async remove(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }

  async exists(key: string): Promise<boolean> {
    return stat(this.pathOf(key)).then(
      () => true,
      () => false,
    );
  }

  pathOf(key: string): string {
    if (!KEY_PATTERN.test(key)) throw new Error(`not a storage key: ${JSON.stringify(key)}`);
    const file = path.join(this.root, key);
    if (!file.startsWith(this.root + path.sep)) throw new Error('storage key escapes the storage folder');
    return file;
  }
}
