// The `fetch` ChatKit uses to reach the chat server: it adds `Authorization: Bearer <jwt>` with a
// token from Better Auth's `/api/auth/token`, for requests to the server's origin only.
//
// No React or Next.js imports here: the module runs in the browser and under `node --test`.

/** What ChatKit's `api.fetch` option and `globalThis.fetch` look like. */
export type FetchLike = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/** The token endpoint did not hand out a token (`status` 401: nobody is signed in). */
export class TokenUnavailableError extends Error {
  readonly status: number;

  constructor(message: string, status: number) {
    super(message);
    this.name = "TokenUnavailableError";
    this.status = status;
  }
}

/** Asks Better Auth's `GET /api/auth/token` for a JWT with the session cookie of the page. */
export function betterAuthTokenFetcher(
  options: { tokenUrl?: string; fetch?: FetchLike } = {},
): () => Promise<string> {
  const tokenUrl = options.tokenUrl ?? "/api/auth/token";
  const send = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  return async () => {
    const response = await send(tokenUrl, {
      method: "GET",
      credentials: "include",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      throw new TokenUnavailableError(
        response.status === 401 ? "not signed in" : `token endpoint answered ${response.status}`,
        response.status,
      );
    }
    const body: unknown = await response.json();
    const token = (body as { token?: unknown } | null)?.token;
    if (typeof token !== "string" || token === "") {
      throw new TokenUnavailableError("the token endpoint answered without a token", 502);
    }
    return token;
  };
}

/** The `exp` and `iat` claims of a JWT, read without verifying it (the server verifies). */
export function jwtTimes(token: string): { exp?: number; iat?: number } {
  const payload = token.split(".")[1];
  if (!payload) return {};
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (claims === null || typeof claims !== "object") return {};
    const { exp, iat } = claims as { exp?: unknown; iat?: unknown };
    return {
      exp: typeof exp === "number" ? exp : undefined,
      iat: typeof iat === "number" ? iat : undefined,
    };
  } catch {
    return {};
  }
}

export interface TokenCacheOptions {
  /** Fetches a new token, e.g. `betterAuthTokenFetcher()`. */
  fetchToken: () => Promise<string>;
  /** Get a new token this long before the cached one expires (default 60 s). */
  refreshBeforeExpirySeconds?: number;
  /** The clock, in milliseconds (tests move it forward). */
  now?: () => number;
}

/**
 * One access token at a time: reused until shortly before it expires, fetched once for any
 * number of callers that ask at the same moment.
 */
export class TokenCache {
  private readonly fetchToken: () => Promise<string>;
  private readonly marginSeconds: number;
  private readonly now: () => number;
  private current: { token: string; refreshAt: number } | null = null;
  private pending: Promise<string> | null = null;

  constructor(options: TokenCacheOptions) {
    this.fetchToken = options.fetchToken;
    this.marginSeconds = options.refreshBeforeExpirySeconds ?? 60;
    this.now = options.now ?? Date.now;
  }

  /** A token that is not about to expire. */
  async token(): Promise<string> {
    if (this.current && this.now() < this.current.refreshAt) return this.current.token;
    return this.fetchOnce();
  }

  /** A token other than `rejected` (the server refused it): fetched anew unless already so. */
  async replace(rejected: string): Promise<string> {
    if (this.current?.token === rejected) this.current = null;
    return this.token();
  }

  /** Forget the cached token (e.g. after signing out). */
  clear(): void {
    this.current = null;
  }

  private fetchOnce(): Promise<string> {
    if (this.pending) return this.pending;
    const receivedBy = this.now();
    const pending = this.fetchToken().then((token) => {
      this.current = { token, refreshAt: this.refreshTime(token, receivedBy) };
      return token;
    });
    this.pending = pending;
    // Whatever happens, the next caller after this one starts a new fetch.
    const settle = () => {
      if (this.pending === pending) this.pending = null;
    };
    pending.then(settle, settle);
    return pending;
  }

  private refreshTime(token: string, receivedAt: number): number {
    const { exp, iat } = jwtTimes(token);
    if (exp === undefined) return receivedAt; // no expiry known: use it for this request only
    // With `iat`, count the lifetime on our own clock: the browser's clock may be off.
    const lifetime = iat !== undefined ? exp - iat : exp - receivedAt / 1000;
    const margin = Math.min(this.marginSeconds, lifetime / 2);
    return receivedAt + (lifetime - margin) * 1000;
  }
}

export interface ChatKitFetchOptions {
  /** The chat server's ChatKit endpoint, e.g. `http://localhost:8001/api/chatkit`. */
  apiUrl: string;
  /** Where bearer tokens come from. */
  tokens: TokenCache;
  /** The fetch that sends the requests (default: the global one). */
  fetch?: FetchLike;
}

/**
 * A fetch for ChatKit's `api.fetch`: adds the bearer token to requests for the chat server's
 * origin, keeps every header ChatKit set, and on a 401 retries once with a new token.
 */
export function createChatKitFetch(options: ChatKitFetchOptions): FetchLike {
  const send = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const serverOrigin = new URL(options.apiUrl, pageUrl()).origin;
  const { tokens } = options;

  return async (input, init) => {
    if (urlOf(input).origin !== serverOrigin) return send(input, init);

    // A Request can be read only once: keep a copy for the retry.
    const spare = input instanceof Request ? input.clone() : input;
    const token = await tokens.token();
    const response = await send(input, withBearer(input, init, token));
    if (response.status !== 401 || !replayable(init)) return response;

    const fresh = await tokens.replace(token);
    await response.body?.cancel();
    return send(spare, withBearer(spare, init, fresh));
  };
}

function pageUrl(): string | undefined {
  const location = (globalThis as { location?: { href?: string } }).location;
  return location?.href;
}

function urlOf(input: RequestInfo | URL): URL {
  if (input instanceof URL) return input;
  if (typeof input === "string") return new URL(input, pageUrl());
  return new URL(input.url);
}

function withBearer(input: RequestInfo | URL, init: RequestInit | undefined, token: string) {
  // ChatKit's own headers (content type, `chatkit-frame-instance-id`, ...) stay as they are.
  const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : {}));
  headers.set("Authorization", `Bearer ${token}`);
  return { ...init, headers };
}

function replayable(init: RequestInit | undefined): boolean {
  // A streamed request body is gone once sent; strings, blobs and forms can be sent again.
  return !(typeof ReadableStream !== "undefined" && init?.body instanceof ReadableStream);
}
