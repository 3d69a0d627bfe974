/**
 * Each request's logger, made when the request first logs. Fastify makes a pino child
 * per request for its bindings (`request_id`), and pino serialises those bindings
 * through the redaction paths at once: ~3 µs and a few hundred bytes on every request,
 * though at `warn` a request that succeeds logs nothing (bench/README.md, HTTP). A
 * `RequestLogger` keeps the parent, the bindings and the options, answers a call below
 * the level by doing nothing, and makes the real child (the one Fastify would have
 * made) for the first line written, for a change of its level, or for a child of its
 * own. Every line a request writes is the line it wrote before.
 *
 * It speaks the part of pino's API that Fastify, its plugins and this app use: the six
 * levels, `silent`, `level`, `child`, `bindings`, `isLevelEnabled` and `flush`, with
 * pino's default levels and their order (the app's logger, src/logger.ts, has no custom
 * levels); anything more is reached through `child({})`.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions, Level, Logger } from 'pino';

type Args = Parameters<Logger['info']>;

export class RequestLogger {
  private readonly parent: Logger;
  private readonly own: Bindings;
  private readonly options: ChildLoggerOptions;
  private made: Logger | undefined;

  constructor(parent: Logger, bindings: Bindings, options: ChildLoggerOptions) {
    this.parent = parent;
    this.own = bindings;
    this.options = options;
  }

  /** Whether the pino child exists yet (for tests). */
  get materialised(): boolean {
    return this.made !== undefined;
  }

  private real(): Logger {
    this.made ??= this.parent.child(this.own, this.options);
    return this.made;
  }

  /** Whether a line at `level` would be written, without making the child. */
  isLevelEnabled(level: Level): boolean {
    if (this.made !== undefined) return this.made.isLevelEnabled(level);
    const own = this.options.level;
    if (own === undefined) return this.parent.isLevelEnabled(level);
    const values = this.parent.levels.values;
    return own !== 'silent' && (values[level] ?? 0) >= (values[own] ?? Number.POSITIVE_INFINITY);
  }

  fatal(...args: Args): void {
    if (this.isLevelEnabled('fatal')) this.real().fatal(...args);
  }
  error(...args: Args): void {
    if (this.isLevelEnabled('error')) this.real().error(...args);
  }
  warn(...args: Args): void {
    if (this.isLevelEnabled('warn')) this.real().warn(...args);
  }
  info(...args: Args): void {
    if (this.isLevelEnabled('info')) this.real().info(...args);
  }
  debug(...args: Args): void {
    if (this.isLevelEnabled('debug')) this.real().debug(...args);
  }
  trace(...args: Args): void {
    if (this.isLevelEnabled('trace')) this.real().trace(...args);
  }
  silent(): void {}

  get level(): string {
    return this.made?.level ?? this.options.level ?? this.parent.level;
  }
  set level(level: string) {
    this.real().level = level;
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): Logger {
    return this.real().child(bindings, options);
  }

  bindings(): Bindings {
    return { ...this.parent.bindings(), ...this.own };
  }

  flush(callback?: (error?: Error) => void): void {
    this.parent.flush(callback);
  }
}

/** Fastify's `childLoggerFactory`: the parent is the app's pino logger (BuildOptions.logger). */
export function requestLoggerFactory(
  logger: FastifyBaseLogger,
  bindings: Bindings,
  options: ChildLoggerOptions,
): FastifyBaseLogger {
  return new RequestLogger(logger as unknown as Logger, bindings, options) as unknown as FastifyBaseLogger;
}
