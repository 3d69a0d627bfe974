/**
 * The security headers recorded once at start-up are exactly the ones helmet sets
 * when it runs on every request, for the options the app uses and helmet's defaults;
 * the documents' set is chosen by the request's path, the API's for everything else.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import helmet, { type HelmetOptions } from 'helmet';
import t from 'tap';
import { securityHeaders, staticHeaders, underPrefix } from '../../src/http/plugins/security-headers.ts';

async function headersOf(register: (app: FastifyInstance) => PromiseLike<unknown>, url = '/') {
  const app = Fastify();
  await register(app);
  app.get('/', async () => ({ ok: true }));
  app.get('/docs/*', async () => ({ ok: true }));
  const res = await app.inject(url);
  await app.close();
  const { date: _date, 'content-length': _length, ...headers } = res.headers;
  return headers;
}

const CASES: Array<[string, HelmetOptions]> = [
  ['helmet’s defaults', {}],
  [
    'a content security policy like the app’s',
    {
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          scriptSrc: ["'self'", "'sha256-abc'"],
        },
      },
    },
  ],
  [
    'some headers off',
    { contentSecurityPolicy: false, strictTransportSecurity: false, xFrameOptions: false },
  ],
];

for (const [name, options] of CASES) {
  t.test(`${name}: the same headers as helmet run per request`, async (t) => {
    const ours = await headersOf((app) => app.register(securityHeaders, { api: staticHeaders(options) }));
    const apply = helmet(options);
    const reference = await headersOf(async (app) => {
      app.addHook('onRequest', (request, reply, done) => {
        apply(request.raw, reply.raw, (error?: unknown) => done(error as Error | undefined));
      });
    });
    t.same(ours, reference);
    t.ok(Object.keys(ours).length > 3, `${Object.keys(ours).length} headers`);
  });
}

t.test('options whose headers vary per response are refused', async (t) => {
  let n = 0;
  t.throws(
    () => staticHeaders({ contentSecurityPolicy: { directives: { scriptSrc: [() => `'nonce-${n++}'`] } } }),
    /vary per response/,
  );
});

t.test("documents get the documents' headers, every other path the API's and its own", async (t) => {
  const options = {
    api: {
      ...staticHeaders({ contentSecurityPolicy: false, xFrameOptions: { action: 'deny' } }),
      'cache-control': 'no-store',
    },
    documents: { headers: staticHeaders({}), prefix: '/docs' },
  };
  const register = (app: FastifyInstance) => app.register(securityHeaders, options);
  const api = await headersOf(register, '/');
  t.equal(api['x-frame-options'], 'DENY', "the API's X-Frame-Options");
  t.equal(api['cache-control'], 'no-store', "the API's own header");
  t.equal(api['content-security-policy'], undefined, "the API's options apply (no CSP here)");
  for (const url of ['/docs/', '/docs/static/index.html', '/docs/json?x=1']) {
    const documents = await headersOf(register, url);
    t.equal(documents['x-frame-options'], 'SAMEORIGIN', `${url}: helmet's default X-Frame-Options`);
    t.match(documents['content-security-policy'], /default-src 'self'/, `${url}: helmet's default CSP`);
    t.equal(documents['cache-control'], undefined, `${url}: not the API's own header`);
  }
});

t.test('a route is under a prefix when its pattern is the prefix or continues it with /', async (t) => {
  for (const url of ['/docs', '/docs/', '/docs/json', '/docs/static/*']) t.ok(underPrefix(url, '/docs'), url);
  for (const url of ['/', '/doc', '/docsx', '/docs.json', '/api/v1/docs', '//docs', '/DOCS'])
    t.notOk(underPrefix(url, '/docs'), url);
});

t.test("the documents' set follows the route matched, whatever the URL's spelling", async (t) => {
  const register = (app: FastifyInstance) =>
    app.register(securityHeaders, {
      api: { ...staticHeaders({ xFrameOptions: { action: 'deny' } }), 'cache-control': 'no-store' },
      documents: { headers: staticHeaders({}), prefix: '/docs' },
    });
  const escaped = await headersOf(register, '/%64ocs/static/index.html');
  t.equal(
    escaped['x-frame-options'],
    'SAMEORIGIN',
    'a %-escaped prefix reaches a documents route, with its set',
  );
  t.equal(escaped['cache-control'], undefined);
  const own: string[] = [];
  const app = Fastify();
  await register(app);
  app.get(
    '/docs/own',
    {
      onRequest: (_request, _reply, done) => {
        own.push('ran');
        done();
      },
    },
    async () => ({}),
  );
  const res = await app.inject('/docs/own');
  await app.close();
  t.same(own, ['ran'], "a documents route's own onRequest hook still runs");
  t.equal(res.headers['x-frame-options'], 'SAMEORIGIN');
});
