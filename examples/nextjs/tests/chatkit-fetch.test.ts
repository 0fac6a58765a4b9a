// lib/chatkit-fetch.ts against a real Better Auth (this app, `next start`) and a real chat server.
//
//   STARTER_APP_URL     the running Next.js app, e.g. http://127.0.0.1:3000 (= BETTER_AUTH_URL)
//   STARTER_CHAT_API    the chat server's ChatKit endpoint, e.g. http://127.0.0.1:8001/api/chatkit
//   STARTER_TURN_FILE   optional: the turn's streamed frames and the user id are written there
//                       (JSON) so the Python side can validate them with chatkit's own types
//
// tests/examples/test_nextjs_starter.py starts both and runs this file with `node --test`.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { before, describe, test } from "node:test";

import {
  type FetchLike,
  TokenCache,
  TokenUnavailableError,
  betterAuthTokenFetcher,
  createChatKitFetch,
  jwtTimes,
} from "../lib/chatkit-fetch";
import { createTaskSearch, modelChoices, tasksUrlFor } from "../lib/composer-options";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (see the top of this file)`);
  return value;
}

const APP_URL = required("STARTER_APP_URL");
const API_URL = required("STARTER_CHAT_API");
const APP_ORIGIN = new URL(APP_URL).origin;
const TOKEN_URL = `${APP_URL}/api/auth/token`;
// The headers the ChatKit web component sets on its own requests.
const CHATKIT_HEADERS = {
  "Content-Type": "application/json",
  "chatkit-frame-instance-id": "frame-test-1",
  "Accept-Language": "en-US,en;q=0.9",
};

interface Sent {
  url: string;
  headers: Headers;
  status: number;
}

/** What a browser page does for the module: cookies for the app's origin, and a log. */
class Browser {
  readonly sent: Sent[] = [];
  tokenFetches = 0;

  constructor(private readonly cookie: string | null) {}

  readonly fetch: FetchLike = async (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : {}));
    const record: Sent = { url, headers: new Headers(headers), status: 0 };
    this.sent.push(record);
    if (new URL(url).origin === APP_ORIGIN && this.cookie) headers.set("cookie", this.cookie);
    if (url === TOKEN_URL) this.tokenFetches += 1;
    const response = await fetch(input, { ...init, headers });
    record.status = response.status;
    return response;
  };

  toServer(): Sent[] {
    return this.sent.filter((request) => request.url.startsWith(API_URL));
  }
}

function claims(token: string): Record<string, unknown> {
  const payload = token.split(".")[1] ?? "";
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
}

function bearerOf(request: Sent): string | null {
  const value = request.headers.get("authorization");
  return value?.startsWith("Bearer ") ? value.slice("Bearer ".length) : null;
}

/** The same token with its signature altered: the chat server must refuse it. */
function tampered(token: string): string {
  const [header, payload, signature = ""] = token.split(".");
  const first = signature[0] === "A" ? "B" : "A";
  return `${header}.${payload}.${first}${signature.slice(1)}`;
}

function chatkitRequest(type: string, params: Record<string, unknown>): RequestInit {
  return { method: "POST", headers: CHATKIT_HEADERS, body: JSON.stringify({ type, params }) };
}

const listThreads = () => chatkitRequest("threads.list", { limit: 20 });

let cookie = "";
let userId = "";

before(async () => {
  // Sign up through the app's Better Auth, as the sign-up page does; keep the session cookie.
  const email = `starter-${Date.now()}-${Math.random().toString(16).slice(2)}@example.test`;
  const response = await fetch(`${APP_URL}/api/auth/sign-up/email`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Origin: APP_ORIGIN },
    body: JSON.stringify({ email, password: "correct horse battery", name: "Starter Test" }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  userId = ((await response.json()) as { user: { id: string } }).user.id;
  cookie = response.headers
    .getSetCookie()
    .map((line) => line.split(";")[0])
    .join("; ");
  assert.match(cookie, /better-auth\.session_token=/);
});

interface SetupOptions {
  /** The token cache's clock. */
  now?: () => number;
  /** Wraps the real token fetch (e.g. to hand out a token the server refuses). */
  fetchToken?: (real: () => Promise<string>) => () => Promise<string>;
}

/** A page's worth of module: its token cache and ChatKit fetch, over a logging browser. */
function setup(options: SetupOptions = {}) {
  const browser = new Browser(cookie);
  const real = betterAuthTokenFetcher({ tokenUrl: TOKEN_URL, fetch: browser.fetch });
  const tokens = new TokenCache({
    fetchToken: options.fetchToken ? options.fetchToken(real) : real,
    now: options.now,
  });
  const chatFetch = createChatKitFetch({ apiUrl: API_URL, tokens, fetch: browser.fetch });
  return { browser, tokens, chatFetch };
}

describe("bearer tokens from Better Auth", () => {
  test("adds the bearer token and keeps ChatKit's own headers", async () => {
    const { browser, chatFetch } = setup();
    const response = await chatFetch(API_URL, listThreads());
    assert.equal(response.status, 200, await response.clone().text());
    assert.ok(Array.isArray(((await response.json()) as { data: unknown }).data));

    const [request] = browser.toServer();
    assert.ok(request);
    const token = bearerOf(request);
    assert.ok(token, "no bearer token on the request to the chat server");
    const payload = claims(token);
    assert.equal(payload.sub, userId);
    assert.equal(payload.iss, APP_ORIGIN);
    assert.equal(payload.aud, APP_ORIGIN);
    const header = JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString());
    assert.equal(header.alg, "EdDSA");
    for (const [name, value] of Object.entries(CHATKIT_HEADERS)) {
      assert.equal(request.headers.get(name), value, `${name} was lost`);
    }
  });

  test("fetches one token for many requests in a row", async () => {
    const { browser, chatFetch } = setup();
    for (let i = 0; i < 5; i += 1) {
      const response = await chatFetch(API_URL, listThreads());
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
    assert.equal(browser.tokenFetches, 1);
    const bearers = new Set(browser.toServer().map(bearerOf));
    assert.equal(bearers.size, 1);
  });

  test("fetches a new token shortly before the cached one expires", async () => {
    let now = Date.now();
    const { browser, chatFetch } = setup({ now: () => now });
    await (await chatFetch(API_URL, listThreads())).body?.cancel();
    const first = bearerOf(browser.toServer()[0]!)!;
    const { exp, iat } = jwtTimes(first);
    assert.ok(exp !== undefined && iat !== undefined);
    assert.equal(exp - iat, 15 * 60, "the starter's tokens live 15 minutes");

    now += (exp - iat - 61) * 1000; // 61 s before expiry: still the cached one
    await (await chatFetch(API_URL, listThreads())).body?.cancel();
    assert.equal(browser.tokenFetches, 1);

    now += 2000; // 59 s before expiry: time for a new one
    const response = await chatFetch(API_URL, listThreads());
    assert.equal(response.status, 200);
    assert.equal(browser.tokenFetches, 2);
  });

  test("fetches the token once for requests that start together", async () => {
    const { browser, chatFetch } = setup();
    const responses = await Promise.all(
      Array.from({ length: 6 }, () => chatFetch(API_URL, listThreads())),
    );
    assert.deepEqual(
      responses.map((response) => response.status),
      Array(6).fill(200),
    );
    assert.equal(browser.tokenFetches, 1);
  });

  test("after a 401, gets a new token once and retries once", async () => {
    let handedOut = 0;
    const { browser, chatFetch } = setup({
      // The first token is refused by the server (as a revoked or rotated-out key would be).
      fetchToken: (real) => async () => (handedOut++ === 0 ? tampered(await real()) : real()),
    });
    const responses = await Promise.all(
      Array.from({ length: 3 }, () => chatFetch(API_URL, listThreads())),
    );
    assert.deepEqual(
      responses.map((response) => response.status),
      [200, 200, 200],
    );
    assert.equal(browser.tokenFetches, 2, "three 401s at once share one new token");
    const statuses = browser.toServer().map((request) => request.status);
    assert.deepEqual(statuses.sort(), [200, 200, 200, 401, 401, 401]);
    const [bad, good] = [...new Set(browser.toServer().map(bearerOf))];
    assert.notEqual(bad, good);
    assert.equal(claims(good!).sub, userId);
  });

  test("a second 401 is returned to ChatKit, not retried again", async () => {
    const { browser, chatFetch } = setup({
      fetchToken: (real) => async () => tampered(await real()),
    });
    const response = await chatFetch(API_URL, listThreads());
    assert.equal(response.status, 401);
    const body = (await response.json()) as { type: string; status_code: number };
    assert.equal(body.status_code, 401);
    assert.equal(browser.toServer().length, 2);
    assert.equal(browser.tokenFetches, 2);
  });

  test("sends no bearer token to other origins", async () => {
    const { browser, chatFetch } = setup();
    const response = await chatFetch(`${APP_URL}/api/auth/ok`, { headers: CHATKIT_HEADERS });
    assert.equal(response.status, 200);
    assert.equal(browser.tokenFetches, 0);
    assert.equal(browser.sent[0]?.headers.get("authorization"), null);
    assert.equal(browser.sent[0]?.headers.get("chatkit-frame-instance-id"), "frame-test-1");
  });

  test("without a session the token endpoint says 401 and nothing reaches the server", async () => {
    const browser = new Browser(null);
    const tokens = new TokenCache({
      fetchToken: betterAuthTokenFetcher({ tokenUrl: TOKEN_URL, fetch: browser.fetch }),
    });
    const chatFetch = createChatKitFetch({ apiUrl: API_URL, tokens, fetch: browser.fetch });
    await assert.rejects(chatFetch(API_URL, listThreads()), (error: unknown) => {
      assert.ok(error instanceof TokenUnavailableError);
      assert.equal(error.status, 401);
      return true;
    });
    assert.equal(browser.toServer().length, 0);
  });
});

describe("a ChatKit turn", () => {
  test("threads.create streams an answer with a Better Auth token", async () => {
    const { browser, chatFetch } = setup();
    const response = await chatFetch(
      API_URL,
      chatkitRequest("threads.create", {
        input: {
          content: [{ type: "input_text", text: "add task buy milk" }],
          attachments: [],
          inference_options: {},
        },
      }),
    );
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const text = await response.text();
    const frames = text
      .split("\n\n")
      .filter((frame) => frame.trim() !== "")
      .map((frame) => {
        assert.ok(frame.startsWith("data: "), `not a data frame: ${frame.slice(0, 80)}`);
        return JSON.parse(frame.slice("data: ".length)) as Record<string, any>;
      });
    const turnFile = process.env.STARTER_TURN_FILE;
    if (turnFile) writeFileSync(turnFile, JSON.stringify({ user_id: userId, frames }));

    const types = frames.map((frame) => frame.type);
    assert.equal(types[0], "thread.created");
    assert.ok(!types.includes("error"), JSON.stringify(frames.filter((f) => f.type === "error")));
    const done = frames.filter((frame) => frame.type === "thread.item.done");
    const answers = done
      .filter((frame) => frame.item.type === "assistant_message")
      .map((frame) => frame.item.content.map((part: { text: string }) => part.text).join(""));
    // The TODO tool ran with the caller's token (the server forwards it to its MCP server).
    assert.ok(
      answers.some((answer) => /^Added task .*buy milk/.test(answer)),
      JSON.stringify(answers),
    );
    assert.ok(
      done.some((frame) => frame.item.type === "workflow"),
      "no tool activity in the stream",
    );
    assert.equal(browser.tokenFetches, 1);

    // The thread belongs to the Better Auth user: it is listed with the same kind of token.
    const threadId = frames[0]!.thread.id as string;
    const listed = await chatFetch(API_URL, listThreads());
    const ids = ((await listed.json()) as { data: { id: string }[] }).data.map((t) => t.id);
    assert.ok(ids.includes(threadId));
  });
});

describe("composer options", () => {
  test("the model list comes from a comma list, the first being the default", () => {
    assert.deepEqual(modelChoices(undefined), []);
    assert.deepEqual(modelChoices(" a-model , b-model,,a-model "), [
      { id: "a-model", label: "a-model", default: true },
      { id: "b-model", label: "b-model" },
    ]);
  });

  test("the task search sits next to the ChatKit endpoint", () => {
    assert.equal(tasksUrlFor("http://127.0.0.1:8001/api/chatkit"), "http://127.0.0.1:8001/api/tasks");
    assert.equal(tasksUrlFor("/api/chatkit?x=1"), "/api/tasks");
  });

  test("@-mentions find the user's tasks on /api/tasks with the same bearer token", async () => {
    const { browser, chatFetch } = setup();
    const title = `call the plumber ${Date.now()}`;
    const turn = await chatFetch(
      API_URL,
      chatkitRequest("threads.create", {
        input: {
          content: [{ type: "input_text", text: `add task ${title}` }],
          attachments: [],
          inference_options: {},
        },
      }),
    );
    assert.equal(turn.status, 200);
    await turn.text();

    const search = createTaskSearch({ tasksUrl: tasksUrlFor(API_URL), fetch: chatFetch });
    const found = await search("PLUMBER");
    const mine = found.filter((entity) => entity.title === title);
    assert.equal(mine.length, 1, JSON.stringify(found));
    const [entity] = mine;
    assert.match(entity!.id, /^task:\S+$/);
    assert.equal(entity!.group, "Tasks");
    assert.deepEqual(entity!.data, { task_id: entity!.id.slice("task:".length), title });
    assert.deepEqual(await search("no such task anywhere"), []);
    const searches = browser.sent.filter((request) => request.url.includes("/api/tasks?"));
    assert.equal(searches.length, 2);
    for (const request of searches) {
      assert.ok(bearerOf(request), "the task search carried no bearer token");
      assert.equal(new URL(request.url).searchParams.get("limit"), "8");
      assert.equal(request.status, 200);
    }
  });
});
