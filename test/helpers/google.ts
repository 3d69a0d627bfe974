/**
 * A stand-in for Google's key server on 127.0.0.1, with RS256 keys the test makes,
 * and ID tokens signed by them. The server counts fetches and can be told to
 * answer slowly (never), with an error, or with other keys (rotation).
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
  UnsecuredJWT,
} from 'jose';
import type { Test } from 'tap';

export const CLIENT_ID = 'test-client-1234.apps.googleusercontent.com';
export const ISSUER = 'https://accounts.google.com';

type KeyObject = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

export interface TestKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  jwk: JWK;
}

export async function makeKey(kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, publicKey, jwk };
}

export async function publicPem(key: TestKey): Promise<string> {
  return exportSPKI(key.publicKey);
}

export type JwksMode = 'ok' | 'hang' | 'hang-body' | 'error' | 'garbage';

export interface JwksServer {
  url: string;
  /** The keys it publishes now. */
  keys: TestKey[];
  mode: JwksMode;
  /** Cache-Control of its answers (null: none). */
  cacheControl: string | null;
  fetches: number;
}

/** Starts the key server; it stops at the end of the test. */
export async function jwksServer(t: Test, keys: TestKey[]): Promise<JwksServer> {
  const hanging = new Set<ServerResponse>();
  const state: JwksServer = { url: '', keys, mode: 'ok', cacheControl: 'public, max-age=3600', fetches: 0 };
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    state.fetches++;
    if (request.url !== '/certs') {
      response.writeHead(404).end();
      return;
    }
    switch (state.mode) {
      case 'hang':
        hanging.add(response);
        return;
      case 'hang-body':
        response.writeHead(200, { 'content-type': 'application/json' });
        response.write('{"keys": [');
        hanging.add(response);
        return;
      case 'error':
        response.writeHead(500, { 'content-type': 'text/plain' }).end('oops');
        return;
      case 'garbage':
        response.writeHead(200, { 'content-type': 'application/json' }).end('{"keys": 7}');
        return;
      case 'ok': {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (state.cacheControl !== null) headers['cache-control'] = state.cacheControl;
        response.writeHead(200, headers).end(JSON.stringify({ keys: state.keys.map((k) => k.jwk) }));
      }
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/certs`;
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const response of hanging) response.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return state;
}

/** A loopback URL nothing listens on (connection refused). */
export async function deadUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/certs`;
}

let subjects = 0;

export interface TokenOptions {
  key: TestKey;
  /** The header's kid; the key's own by default. */
  kid?: string;
  claims?: JWTPayload;
  /** Unix seconds of `iat`; now by default. */
  iat?: number;
  /** Unix seconds of `exp`; iat + 3600 by default. */
  exp?: number;
}

/** A fresh Google subject and email. */
export function newGoogleUser(): { sub: string; email: string } {
  const n = `${process.pid}${++subjects}`;
  return { sub: `1${n.padStart(20, '0')}`, email: `g${n}@gmail.example.com` };
}

/** An ID token as Google would issue it, changed by `claims`. */
export async function idToken(options: TokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const iat = options.iat ?? now;
  const user = newGoogleUser();
  return new SignJWT({
    iss: ISSUER,
    aud: CLIENT_ID,
    sub: user.sub,
    email: user.email,
    email_verified: true,
    name: 'Ada Lovelace',
    iat,
    exp: options.exp ?? iat + 3600,
    ...options.claims,
  })
    .setProtectedHeader({ alg: 'RS256', kid: options.kid ?? options.key.kid, typ: 'JWT' })
    .sign(options.key.privateKey);
}

export function b64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/**
 * Tokens under `key`'s kid that `key` did not sign, each otherwise valid (issuer,
 * audience, times, a fresh verified subject): signed by `other`, changed after signing,
 * `alg: none` (with and without the kid), and HS256 with the public key as the HMAC
 * secret (as PEM, and as the JWK's modulus). Only the signature check refuses them.
 */
export async function forgedIdTokens(key: TestKey, other: TestKey): Promise<Array<[string, string]>> {
  const now = Math.floor(Date.now() / 1000);
  const claims = () => ({
    iss: ISSUER,
    aud: CLIENT_ID,
    ...newGoogleUser(),
    email_verified: true,
    iat: now,
    exp: now + 3600,
  });
  const good = await idToken({ key });
  const [head, body, signature] = good.split('.');
  const changed = { ...JSON.parse(Buffer.from(body!, 'base64url').toString()), ...newGoogleUser() };
  const hs256 = await new SignJWT(claims())
    .setProtectedHeader({ alg: 'HS256', kid: key.kid })
    .sign(new TextEncoder().encode(await publicPem(key)));
  // The same trick written out by hand, with the JWK's modulus as the secret.
  const hsHead = b64url({ alg: 'HS256', kid: key.kid, typ: 'JWT' });
  const hsBody = b64url(claims());
  const hsManual = `${hsHead}.${hsBody}.${createHmac('sha256', key.jwk.n!).update(`${hsHead}.${hsBody}`).digest('base64url')}`;
  return [
    [
      `bad signature (signed by another key under kid ${key.kid})`,
      await idToken({ key: other, kid: key.kid }),
    ],
    ['a payload changed after signing', `${head}.${b64url(changed)}.${signature}`],
    ['alg none', new UnsecuredJWT(claims()).encode()],
    ['alg none with a kid', `${b64url({ alg: 'none', kid: key.kid })}.${b64url(claims())}.`],
    ['HS256 signed with the public key (PEM)', hs256],
    ['HS256 signed with the public key (modulus)', hsManual],
  ];
}
