// A real Better Auth server for the interop tests: in-memory users, email + password, the `jwt`
// plugin, plain node http on 127.0.0.1. Test-only; never deploy this file.
//
// Usage: node issuer.mjs [port]     (port 0 or unset: the OS picks one)
// Prints `READY <port>` on stdout once it answers requests.
//
// Environment (all optional):
//   ISSUER_PORT            port when no argument is given (default 0)
//   ISSUER_JWT_ALG         EdDSA (default), ES256, ES512, RS256 or PS256
//   ISSUER_JWT_ISSUER      `iss` of access tokens (default: baseURL)
//   ISSUER_JWT_AUDIENCE    `aud` of access tokens (default: baseURL)
//   ISSUER_JWT_EXPIRATION  lifetime of access tokens, e.g. "15m" (Better Auth's default)
//   ISSUER_JWKS_ROTATION_SECONDS  jwks.rotationInterval: a new key once the newest is this old
//   ISSUER_SECRET          Better Auth's secret (default: random per process)
//
// Test-only endpoints, outside Better Auth's /api/auth namespace:
//   POST /test/rotate-key  add a new signing key (a new kid) the way the plugin's rotation does;
//                          it signs every token from then on. Answers {"kid": "..."}.
//   POST /test/sign        sign {"payload": {...}, "overrideOptions": {...}} with the current key
//                          through the plugin's own signJWT (e.g. an expired token, another aud).
//                          Answers {"token": "..."}.

import { randomBytes } from "node:crypto";
import { createServer } from "node:http";

import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";
import { createJwk } from "better-auth/plugins/jwt";

const ALGORITHMS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256" },
  ES512: { alg: "ES512" },
  RS256: { alg: "RS256", modulusLength: 2048 },
  PS256: { alg: "PS256", modulusLength: 2048 },
};
const MAX_BODY_BYTES = 64 * 1024;

function configuredPort() {
  const raw = process.argv[2] ?? process.env.ISSUER_PORT ?? "0";
  const port = Number.parseInt(raw, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid port: ${raw}`);
  }
  return port;
}

function keyPairConfig() {
  const name = process.env.ISSUER_JWT_ALG || "EdDSA";
  const config = ALGORITHMS[name];
  if (!config) {
    throw new Error(`ISSUER_JWT_ALG=${name}; use one of ${Object.keys(ALGORITHMS).join(", ")}`);
  }
  return config;
}

function jwtOptions() {
  const options = {
    jwks: { keyPairConfig: keyPairConfig() },
    jwt: {},
    // The session cookie cache is signed with the same key: the interop tests refuse it.
    sessionCookieCache: true,
  };
  if (process.env.ISSUER_JWT_ISSUER) options.jwt.issuer = process.env.ISSUER_JWT_ISSUER;
  if (process.env.ISSUER_JWT_AUDIENCE) options.jwt.audience = process.env.ISSUER_JWT_AUDIENCE;
  if (process.env.ISSUER_JWT_EXPIRATION) {
    options.jwt.expirationTime = process.env.ISSUER_JWT_EXPIRATION;
  }
  if (process.env.ISSUER_JWKS_ROTATION_SECONDS) {
    const seconds = Number(process.env.ISSUER_JWKS_ROTATION_SECONDS);
    if (!(seconds > 0)) throw new Error("ISSUER_JWKS_ROTATION_SECONDS must be a positive number");
    options.jwks.rotationInterval = seconds;
  }
  return options;
}

function buildAuth(baseURL, options) {
  return betterAuth({
    baseURL,
    secret: process.env.ISSUER_SECRET || randomBytes(32).toString("base64url"),
    database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
    emailAndPassword: { enabled: true },
    session: { cookieCache: { enabled: true, strategy: "jwt", maxAge: 300 } },
    plugins: [jwt(options)],
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
  });
}

async function readJson(request) {
  const chunks = [];
  let size = 0;
  for await (const chunk of request) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Error("body too large");
    chunks.push(chunk);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {};
}

function sendJson(response, status, body) {
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(body));
}

function testRoutes(auth, options) {
  return {
    "/test/rotate-key": async () => {
      // What the plugin itself does when `jwks.rotationInterval` has expired the latest key:
      // store a new key pair; the newest live key of the configured alg signs from now on.
      const key = await createJwk({ context: await auth.$context }, options);
      return { kid: key.id };
    },
    "/test/sign": async (body) => {
      const result = await auth.api.signJWT({
        body: { payload: body.payload ?? {}, overrideOptions: body.overrideOptions },
      });
      return { token: result.token };
    },
  };
}

async function main() {
  const options = jwtOptions();
  let handle = async (_request, response) => sendJson(response, 503, { error: "starting" });
  const server = createServer((request, response) => {
    handle(request, response).catch((error) => {
      console.error(error);
      if (!response.headersSent) sendJson(response, 500, { error: String(error) });
      else response.end();
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(configuredPort(), "127.0.0.1", resolve);
  });
  const { port } = server.address();
  // The base URL names the real port, so iss/aud and cookies match what clients use.
  const auth = buildAuth(`http://127.0.0.1:${port}`, options);
  const authHandler = toNodeHandler(auth);
  const routes = testRoutes(auth, options);

  handle = async (request, response) => {
    const path = new URL(request.url, "http://127.0.0.1").pathname;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (route) {
      if (request.method !== "POST") return sendJson(response, 405, { error: "POST only" });
      return sendJson(response, 200, await route(await readJson(request)));
    }
    return authHandler(request, response);
  };

  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => {
      server.close(() => process.exit(0));
      server.closeAllConnections();
    });
  }
  process.stdout.write(`READY ${port}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
