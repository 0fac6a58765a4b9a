// The ChatKit wire protocol over fetch, sent the way the ChatKit web component sends it:
// every operation is a JSON POST to /api/chatkit; streamed answers are `data: <json>` frames.

/** One id per page load, like the component's iframe instance id. */
const FRAME_INSTANCE_ID = randomHex(16);

function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (value) => value.toString(16).padStart(2, "0")).join("");
}

/** An HTTP error from the server, carrying its JSON body `{type, message, status_code}`. */
export class ApiError extends Error {
  constructor(status, type, message) {
    super(message || `The server answered ${status}.`);
    this.status = status;
    this.type = type;
  }

  static async from(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return new ApiError(response.status, body?.type ?? "error", body?.message);
  }
}

/** The API base URL: `?api=<url>` when given (http or https only), else the page's origin. */
export function apiBaseFrom(location) {
  const requested = new URLSearchParams(location.search).get("api");
  if (!requested) return location.origin;
  const url = new URL(requested);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error("The api parameter must be an http(s) URL.");
  }
  return url.origin + url.pathname.replace(/\/+$/, "");
}

/** `GET /api/playground/config`: how to sign in (`{sign_in: "name" | "token"}`). */
export async function fetchConfig(base) {
  const response = await fetch(`${base}/api/playground/config`);
  if (!response.ok) throw await ApiError.from(response);
  return response.json();
}

/** `POST /api/dev/token`: a token for `user` (local-secret mode, loopback only). */
export async function mintDevToken(base, user) {
  const response = await fetch(`${base}/api/dev/token`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  if (!response.ok) throw await ApiError.from(response);
  return response.json();
}

/** Talks ChatKit to `${base}/api/chatkit` as one signed-in user. */
export class ChatKitApi {
  /**
   * @param {string} base the API base URL
   * @param {{token: () => Promise<string>, refresh: (() => Promise<string>) | null}} auth
   *   `refresh` gets a new token after a 401 (once per request), or is null.
   */
  constructor(base, auth) {
    this.url = `${base}/api/chatkit`;
    this.auth = auth;
  }

  headers(token) {
    return {
      "Content-Type": "application/json",
      "Accept-Language": navigator.language || "en",
      "chatkit-frame-instance-id": FRAME_INSTANCE_ID,
      Authorization: `Bearer ${token}`,
    };
  }

  async post(type, params, signal) {
    const body = JSON.stringify({ type, params });
    return this.authorized((token) =>
      fetch(this.url, { method: "POST", headers: this.headers(token), body, signal }),
    );
  }

  /** Send with the current token, once more with a fresh one after a 401; throws ApiError. */
  async authorized(send) {
    let response = await send(await this.auth.token());
    if (response.status === 401 && this.auth.refresh) {
      response = await send(await this.auth.refresh());
    }
    if (!response.ok) throw await ApiError.from(response);
    return response;
  }

  /**
   * Phase two of a `two_phase` upload: send `file` as its `upload_descriptor` says (a multipart
   * `file` field for POST, the raw bytes otherwise). The bearer token goes only to this API's
   * own origin. Resolves to the attachment the server answers with.
   */
  async upload(attachment, file) {
    const descriptor = attachment.upload_descriptor;
    if (!descriptor?.url) throw new Error("The server gave no upload address for this file.");
    const target = new URL(descriptor.url);
    if (target.protocol !== "http:" && target.protocol !== "https:") {
      throw new Error("The upload address must be an http(s) URL.");
    }
    const method = (descriptor.method || "POST").toUpperCase();
    const ownOrigin = target.origin === new URL(this.url).origin;
    const send = (token) => {
      const headers = { ...(descriptor.headers || {}) };
      if (ownOrigin) {
        headers.Authorization = `Bearer ${token}`;
        headers["chatkit-frame-instance-id"] = FRAME_INSTANCE_ID;
      }
      let body = file;
      if (method === "POST") {
        body = new FormData();
        body.append("file", file, file.name);
      } else if (file.type) {
        headers["Content-Type"] = file.type;
      }
      return fetch(target.href, { method, headers, body });
    };
    const response = ownOrigin
      ? await this.authorized(send)
      : await send("");
    if (!response.ok) throw await ApiError.from(response);
    const text = await response.text();
    return text ? { ...attachment, ...JSON.parse(text) } : attachment;
  }

  /** A non-streaming operation; resolves to its JSON answer. */
  async call(type, params) {
    const response = await this.post(type, params);
    return response.json();
  }

  /** A streaming operation; yields each event. Aborting `signal` stops it (AbortError). */
  async *stream(type, params, signal) {
    const response = await this.post(type, params, signal);
    yield* sseEvents(response.body);
  }
}

/** Parse a `text/event-stream` body of `data: <json>` frames into objects. */
export async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}
