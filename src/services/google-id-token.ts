/**
 * Google ID tokens (Google Identity Services): the whole check is `jose`'s
 * `jwtVerify` against a `createRemoteJWKSet` — signature (RS256 only), `iss` one of
 * Google's two issuers, `aud` our client id, `exp`/`iat`/`nbf` with 60 s of skew —
 * plus `email_verified`. No JWT or RSA code of our own.
 *
 * The key set is fetched from GOOGLE_JWKS_URL and kept as long as its
 * `Cache-Control: max-age` (less `Age`) says; an unknown `kid` refetches it once
 * (at most once per cooldown, so random key ids cannot make us hammer Google). A
 * fetch waits at most `timeoutMs`: a slow or unreachable key server is a
 * KeysUnavailableError (503), never a hung request; any fault of the token itself
 * is an InvalidIdTokenError (401).
 */
import {
  createRemoteJWKSet,
  customFetch,
  errors,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { UnauthenticatedError, UpstreamUnavailableError } from '../domain/errors.ts';

export const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];
/** A real Google ID token is about 1 KiB; anything far longer is refused unread. */
export const ID_TOKEN_MAX_LENGTH = 16 * 1024;
const CLOCK_TOLERANCE_SECONDS = 60;
const MAX_TOKEN_AGE_SECONDS = 3600;
/** Without a usable Cache-Control, keys are kept this long. */
const DEFAULT_KEYS_MAX_AGE_MS = 5 * 60_000;
/** However long Cache-Control says, keys are refetched at least daily. */
const LONGEST_KEYS_MAX_AGE_MS = 24 * 3_600_000;

/** Who a valid token names: Google's stable user id and the verified email. */
export interface GoogleIdentity {
  sub: string;
  email: string;
  name: string | null;
}

export interface GoogleVerifierOptions {
  clientId: string;
  jwksUrl: string;
  timeoutMs: number;
  cooldownMs: number;
}

/** Any fault of the token itself (401 INVALID_ID_TOKEN). */
export class InvalidIdTokenError extends UnauthenticatedError {
  constructor(message: string) {
    super(message, 'INVALID_ID_TOKEN');
  }
}

/** Google's keys could not be fetched in time (503 GOOGLE_UNAVAILABLE: the client may retry). */
export class KeysUnavailableError extends UpstreamUnavailableError {
  constructor(message: string, options?: ErrorOptions) {
    super('GOOGLE_UNAVAILABLE', message, options);
  }
}

/** Seconds of freshness a JWKS response allows, from Cache-Control and Age; null when it says nothing usable. */
export function freshnessMs(headers: Headers): number | null {
  const cacheControl = headers.get('cache-control') ?? '';
  const directives = cacheControl
    .toLowerCase()
    .split(',')
    .map((d) => d.trim());
  if (directives.includes('no-store') || directives.includes('no-cache')) return 0;
  const maxAge = directives.map((d) => /^max-age=(\d{1,10})$/.exec(d)).find((m) => m !== null);
  if (maxAge === undefined) return null;
  const age = Number(/^\d{1,10}$/.exec(headers.get('age')?.trim() ?? '')?.[0] ?? 0);
  return Math.min(Math.max(Number(maxAge[1]) - age, 0) * 1000, LONGEST_KEYS_MAX_AGE_MS);
}

export class GoogleIdTokenVerifier {
  private readonly remote: ReturnType<typeof createRemoteJWKSet>;
  private readonly getKey: JWTVerifyGetKey;
  /** When the key set in hand goes stale (Cache-Control); 0 before the first fetch. */
  private keysExpireAt = 0;

  readonly options: GoogleVerifierOptions;

  constructor(options: GoogleVerifierOptions) {
    this.options = options;
    this.remote = createRemoteJWKSet(new URL(options.jwksUrl), {
      timeoutDuration: options.timeoutMs,
      cooldownDuration: options.cooldownMs,
      // Freshness is ours (keysExpireAt, from Cache-Control); jose only fetches when told to.
      cacheMaxAge: Number.POSITIVE_INFINITY,
      [customFetch]: async (url: string, init: RequestInit) => {
        const response = await fetch(url, init);
        if (response.status === 200)
          this.keysExpireAt = Date.now() + (freshnessMs(response.headers) ?? DEFAULT_KEYS_MAX_AGE_MS);
        return response;
      },
    });
    this.getKey = async (header, token) => {
      try {
        if (Date.now() >= this.keysExpireAt) await this.remote.reload();
        return await this.remote(header, token);
      } catch (error) {
        if (keysUnavailable(error))
          throw new KeysUnavailableError("Google's signing keys could not be fetched; try again shortly", {
            cause: error,
          });
        throw error; // no key for this token's kid: the token's fault
      }
    };
  }

  /** The identity in a valid token; InvalidIdTokenError for any bad token, KeysUnavailableError when the keys cannot be had. */
  async verify(idToken: string): Promise<GoogleIdentity> {
    if (idToken.length > ID_TOKEN_MAX_LENGTH) throw invalid('the ID token is too long');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, this.getKey, {
        issuer: GOOGLE_ISSUERS,
        audience: this.options.clientId,
        algorithms: ['RS256'],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        // Google's ID tokens live an hour: an older `iat`, or one in the future, is refused (with the skew).
        maxTokenAge: MAX_TOKEN_AGE_SECONDS,
        requiredClaims: ['iss', 'aud', 'exp', 'iat', 'sub'],
      }));
    } catch (error) {
      if (error instanceof KeysUnavailableError) throw error;
      throw invalid(error instanceof errors.JOSEError ? describe(error) : 'the ID token is not valid');
    }
    if (payload.email_verified !== true) throw invalid('the Google account has no verified email');
    const { sub, email, name } = payload;
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > 255)
      throw invalid('the ID token has no valid subject');
    if (typeof email !== 'string' || email.length === 0) throw invalid('the ID token has no email');
    return { sub, email, name: typeof name === 'string' ? name : null };
  }
}

function invalid(detail: string): InvalidIdTokenError {
  return new InvalidIdTokenError(detail);
}

/**
 * Whether a failure was about getting the keys rather than about the token: a
 * timeout, a refused connection, a non-200 answer or an unreadable key set. jose
 * reports the last two as a plain JOSEError (no subclass) or JWKSInvalid; everything
 * a token can get wrong is a JOSEError subclass of its own.
 */
function keysUnavailable(error: unknown): boolean {
  if (error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) return true;
  if (error instanceof errors.JOSEError) return error.constructor === errors.JOSEError;
  return true; // fetch's own errors (TypeError: fetch failed, AbortError); only ever seen while getting keys
}

/** What was wrong with the token, in words that reveal nothing about the server. */
function describe(error: InstanceType<typeof errors.JOSEError>): string {
  if (error instanceof errors.JWTExpired) return 'the ID token has expired';
  if (error instanceof errors.JWTClaimValidationFailed)
    return `the ID token's "${error.claim}" claim is not valid`;
  if (error instanceof errors.JOSEAlgNotAllowed) return 'the ID token must be signed with RS256';
  if (error instanceof errors.JWKSNoMatchingKey) return 'the ID token was not signed by a current Google key';
  if (error instanceof errors.JWSSignatureVerificationFailed) return "the ID token's signature is not valid";
  return 'the ID token is not valid';
}
