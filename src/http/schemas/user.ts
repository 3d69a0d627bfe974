import { Type } from '@sinclair/typebox';
import { AUTH_PROVIDERS, USER_ROLES } from '../../domain/enums.ts';
import { DateTime, Nullable, NullableDateTime } from './common.ts';

export const AuthProvider = Type.Union(
  AUTH_PROVIDERS.map((p) => Type.Literal(p)),
  { $id: 'AuthProvider' },
);
export const UserRole = Type.Union(
  USER_ROLES.map((r) => Type.Literal(r)),
  { $id: 'UserRole' },
);

/** A user as the API shows it: never a password hash or a token. */
export const User = Type.Object(
  {
    id: Type.Integer(),
    email: Type.String(),
    username: Type.String(),
    auth_provider: Type.Ref(AuthProvider),
    role: Type.Ref(UserRole),
    is_active: Type.Boolean(),
    is_verified: Type.Boolean(),
    is_ibkr_connected: Type.Boolean(),
    ibkr_user_id: Nullable(Type.String()),
    ibkr_connected_at: NullableDateTime(),
    created_at: DateTime(),
    updated_at: DateTime(),
    last_login_at: NullableDateTime(),
  },
  { $id: 'User', additionalProperties: false },
);

export const Email = Type.String({ minLength: 3, maxLength: 320, description: 'trimmed and lower-cased' });
export const Username = Type.String({ minLength: 3, maxLength: 100, pattern: '^[A-Za-z0-9_-]{3,100}$' });
export const Password = Type.String({ minLength: 8, maxLength: 256, description: '8 to 256 characters' });

export const Session = Type.Object(
  {
    user: Type.Ref(User),
    token: Type.Optional(
      Type.String({
        description:
          'bearer token for the Authorization header; absent when `cookie: true` set it as a cookie',
      }),
    ),
    csrf_token: Type.Optional(
      Type.String({
        description:
          'with `cookie: true` only: send it as `X-CSRF-Token` on POST, PUT, PATCH and DELETE (also in the `dc_csrf` cookie)',
      }),
    ),
  },
  { $id: 'Session', additionalProperties: false },
);

/** `cookie: true` asks for a browser session (HttpOnly cookie) instead of a token in the body. */
export const CookieFlag = Type.Optional(
  Type.Boolean({
    description: 'set the session as an HttpOnly cookie (browsers) instead of returning the token',
  }),
);

export const Providers = Type.Object(
  {
    email: Type.Literal(true),
    google: Type.Union([
      Type.Object({ client_id: Type.String() }, { additionalProperties: false }),
      Type.Null(),
    ]),
  },
  { $id: 'Providers', additionalProperties: false },
);

export const USER_SCHEMAS = [AuthProvider, UserRole, User, Session, Providers];
