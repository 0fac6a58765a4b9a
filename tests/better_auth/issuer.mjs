// A real Better Auth server for the interop tests: in-memory users, email + password, the `jwt`
// plugin, plain node http on 127.0.0.1. Test-only; never deploy this file.
//
// Usage: node issuer.mjs [port]     (port 0 or unset: the OS picks one)
// Prints `READY <port>` on stdout once the first issuer answers requests.
//
// Settings of the first issuer, from the environment (all optional):
//   ISSUER_PORT            port when no argument is given (default 0)
//   ISSUER_JWT_ALG         EdDSA (default), ES256, ES512, RS256 or PS256
//   ISSUER_JWT_ISSUER      `iss` of access tokens (default: baseURL)
//   ISSUER_JWT_AUDIENCE    `aud` of access tokens (default: baseURL)
//   ISSUER_JWT_EXPIRATION  lifetime of access tokens, e.g. "15m" (Better Auth's default)
//   ISSUER_JWKS_ROTATION_SECONDS  jwks.rotationInterval: a new key once the newest is this old
//   ISSUER_SECRET          Better Auth's secret (default: random per issuer)
//
// Test-only endpoints of every issuer, outside Better Auth's /api/auth namespace:
//   POST /test/issuers     start another issuer in this process: its own Better Auth instance
//                          (own users, sessions and keys) on its own port the OS picks. The body
//                          holds its settings under the ISSUER_* names above (the environment
//                          is not read for it). Answers {"port": n}. Loading better-auth is most
//                          of a node start; the tests pay it once, not once per configuration.
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
// Every issuer's http server, closed together on SIGTERM/SIGINT.
const servers = [];

function configuredPort() {
  const raw = process.argv[2] ?? process.env.ISSUER_PORT ?? "0";
  const port = Number.parseInt(raw, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid port: ${raw}`);
  }
  return port;
}

// `settings` maps the ISSUER_* names to strings: process.env, or the body of POST /test/issuers.
function keyPairConfig(settings) {
  const name = settings.ISSUER_JWT_ALG || "EdDSA";
  const config = ALGORITHMS[name];
  if (!config) {
    throw new Error(`ISSUER_JWT_ALG=${name}; use one of ${Object.keys(ALGORITHMS).join(", ")}`);
  }
  return config;
}

function jwtOptions(settings) {
  const options = {
    jwks: { keyPairConfig: keyPairConfig(settings) },
    jwt: {},
    // The session cookie cache is signed with the same key: the interop tests refuse it.
    sessionCookieCache: true,
  };
  if (settings.ISSUER_JWT_ISSUER) options.jwt.issuer = settings.ISSUER_JWT_ISSUER;
  if (settings.ISSUER_JWT_AUDIENCE) options.jwt.audience = settings.ISSUER_JWT_AUDIENCE;
  if (settings.ISSUER_JWT_EXPIRATION) {
    options.jwt.expirationTime = settings.ISSUER_JWT_EXPIRATION;
  }
  if (settings.ISSUER_JWKS_ROTATION_SECONDS) {
    const seconds = Number(settings.ISSUER_JWKS_ROTATION_SECONDS);
    if (!(seconds > 0)) throw new Error("ISSUER_JWKS_ROTATION_SECONDS must be a positive number");
    options.jwks.rotationInterval = seconds;
  }
  return options;
}

function buildAuth(baseURL, options, secret) {
  return betterAuth({
    baseURL,
    secret: secret || randomBytes(32).toString("base64url"),
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

// Only the ISSUER_* string settings of a POST /test/issuers body.
function issuerSettings(body) {
  const settings = {};
  for (const [name, value] of Object.entries(body)) {
    if (name.startsWith("ISSUER_") && typeof value === "string") settings[name] = value;
  }
  return settings;
}

function testRoutes(auth, options) {
  return {
    "/test/issuers": async (body) => ({ port: await startIssuer(issuerSettings(body), 0) }),
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

// One Better Auth instance on its own http server; resolves to its port once it listens.
async function startIssuer(settings, port) {
  const options = jwtOptions(settings);
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
    server.listen(port, "127.0.0.1", resolve);
  });
  servers.push(server);
  const address = server.address();
  // The base URL names the real port, so iss/aud and cookies match what clients use.
  const auth = buildAuth(`http://127.0.0.1:${address.port}`, options, settings.ISSUER_SECRET);
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
  return address.port;
}

async function main() {
  const port = await startIssuer(process.env, configuredPort());
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => {
      let open = servers.length;
      for (const server of servers) {
        server.close(() => {
          open -= 1;
          if (open === 0) process.exit(0);
        });
        server.closeAllConnections();
      }
    });
  }
  process.stdout.write(`READY ${port}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
