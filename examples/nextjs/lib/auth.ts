// Better Auth on the Next.js server: email + password, users in a SQLite file, and the `jwt`
// plugin that signs the access tokens the chat server verifies (EdDSA, published at
// /api/auth/jwks, handed out at /api/auth/token).
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { jwt } from "better-auth/plugins";
import { SqliteDialect } from "kysely";
import Database from "libsql";

function createAuth() {
  // libsql: SQLite with a prebuilt binary from npm (no compiler needed), driven through Kysely.
  const file = process.env.AUTH_DATABASE_FILE || "auth.db";
  return betterAuth({
    // The `iss` and `aud` of every token: the chat server's AUTH_ISSUER and AUTH_AUDIENCE.
    baseURL: process.env.BETTER_AUTH_URL || "http://localhost:3000",
    // BETTER_AUTH_SECRET is read from the environment by Better Auth itself.
    database: { dialect: new SqliteDialect({ database: new Database(file) }), type: "sqlite" },
    emailAndPassword: { enabled: true },
    plugins: [
      jwt({
        jwks: { keyPairConfig: { alg: "EdDSA", crv: "Ed25519" } },
        jwt: {
          expirationTime: "15m",
          // The chat server reads only `sub` (the user id); keep email and name out of the token.
          definePayload: ({ user }) => ({ id: user.id }),
        },
      }),
    ],
    telemetry: { enabled: false },
  });
}

export type Auth = ReturnType<typeof createAuth>;

// One instance per server process, kept on globalThis so `next dev` reloads reuse it.
const holder = globalThis as typeof globalThis & { chatkitStarterAuth?: Promise<Auth> };

/** Better Auth, with its tables created or updated on first use. */
export function getAuth(): Promise<Auth> {
  holder.chatkitStarterAuth ??= (async () => {
    const auth = createAuth();
    const { runMigrations } = await getMigrations(auth.options);
    await runMigrations();
    return auth;
  })().catch((error: unknown) => {
    holder.chatkitStarterAuth = undefined;
    throw error;
  });
  return holder.chatkitStarterAuth;
}
