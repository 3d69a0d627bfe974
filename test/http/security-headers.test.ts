/**
 * The security headers recorded once at start-up are exactly the ones helmet sets
 * when it runs on every request, for the options the app uses and helmet's defaults.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import helmet, { type HelmetOptions } from 'helmet';
import t from 'tap';
import { securityHeaders } from '../../src/http/plugins/security-headers.ts';

async function headersOf(register: (app: FastifyInstance) => PromiseLike<unknown>) {
  const app = Fastify();
  await register(app);
  app.get('/', async () => ({ ok: true }));
  const res = await app.inject('/');
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
    const ours = await headersOf((app) => app.register(securityHeaders, { helmet: options }));
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

t.test('options whose headers vary per response are refused at start-up', async (t) => {
  let n = 0;
  const app = Fastify();
  app.register(securityHeaders, {
    helmet: { contentSecurityPolicy: { directives: { scriptSrc: [() => `'nonce-${n++}'`] } } },
  });
  await t.rejects(async () => {
    await app.ready();
  }, /vary per response/);
});
