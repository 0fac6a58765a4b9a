// The playground page: sign-in, the thread list, the composer and the streamed conversation.

import { ApiError, ChatKitApi, apiBaseFrom, fetchConfig, mintDevToken } from "./api.js";
import { Transcript, attachmentList } from "./transcript.js";

const THREAD_PAGE_SIZE = 20;
const ITEM_PAGE_SIZE = 20;
const RENEW_BEFORE_MS = 60_000;
const CONFIRM_DELETE_MS = 3000;
const THEME_KEY = "playground:theme";

const $ = (id) => document.getElementById(id);

const state = {
  base: "",
  signIn: "name", // "name" (POST /api/dev/token) or "token" (paste a bearer token)
  session: null,
  api: null,
  threadId: null,
  threadsAfter: null,
  itemsAfter: null,
  controller: null,
  streamDone: null,
  pending: [], // attachments uploaded for the next message
  uploading: 0,
};

const transcript = new Transcript($("transcript"), {
  onFeedback: (itemId, kind) => feedback(itemId, kind),
  onRetry: (itemId) => guard(() => retry(itemId)),
  onWidgetAction: (itemId, action) => guard(() => widgetAction(itemId, action)),
});

/** Run an async handler; whatever it throws is shown instead of becoming a console error. */
async function guard(work) {
  try {
    await work();
    return true;
  } catch (error) {
    reportError(error);
    return false;
  }
}

function reportError(error) {
  if (error instanceof ApiError && error.status === 401 && state.session?.mode === "token") {
    signOut("The server rejected this token. Paste a valid one.");
    return;
  }
  transcript.showError(error.message || String(error), false);
}

// ------------------------------------------------------------------ theme

function effectiveTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen) return chosen;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function labelThemeButton() {
  $("theme-toggle").textContent = effectiveTheme() === "dark" ? "Light theme" : "Dark theme";
}

function initTheme() {
  const saved = localStorage.getItem(THEME_KEY);
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
  labelThemeButton();
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", labelThemeButton);
  $("theme-toggle").addEventListener("click", () => {
    const next = effectiveTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem(THEME_KEY, next);
    labelThemeButton();
  });
}

// ------------------------------------------------------------------ sign-in

const sessionKey = () => `playground:session:${state.base}`;

function saveSession(session) {
  const { mode, user, token, expiresAt } = session;
  localStorage.setItem(sessionKey(), JSON.stringify({ mode, user, token, expiresAt }));
}

function loadSession() {
  try {
    const session = JSON.parse(localStorage.getItem(sessionKey()) || "null");
    if (!session?.token || session.mode !== state.signIn) return null;
    // A name session renews its token itself; a pasted token is good until it expires.
    if (session.mode === "token" && session.expiresAt && session.expiresAt < Date.now()) {
      return null;
    }
    return session;
  } catch {
    return null;
  }
}

function jwtClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")));
  } catch {
    return {};
  }
}

async function nameSession(user) {
  const minted = await mintDevToken(state.base, user);
  return {
    mode: "name",
    user,
    token: minted.token,
    expiresAt: Date.now() + minted.expires_in * 1000,
  };
}

function tokenSession(token) {
  const claims = jwtClaims(token);
  return {
    mode: "token",
    user: typeof claims.sub === "string" ? claims.sub : "token user",
    token,
    expiresAt: typeof claims.exp === "number" ? claims.exp * 1000 : null,
  };
}

/** Tokens for the API: a name session renews before expiry and after a 401, once at a time. */
function authFor(session) {
  const renew = async () => {
    session.renewing ??= nameSession(session.user)
      .then((fresh) => {
        Object.assign(session, fresh);
        saveSession(session);
      })
      .finally(() => {
        session.renewing = null;
      });
    await session.renewing;
    return session.token;
  };
  const named = session.mode === "name";
  return {
    token: async () =>
      named && session.expiresAt - RENEW_BEFORE_MS < Date.now() ? renew() : session.token,
    refresh: named ? renew : null,
  };
}

function showSignIn(message) {
  $("chat").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("name-form").hidden = state.signIn !== "name";
  $("token-form").hidden = state.signIn !== "token";
  $("sign-in-error").hidden = !message;
  $("sign-in-error").textContent = message || "";
  (state.signIn === "name" ? $("name-input") : $("token-input")).focus();
}

async function startChat(session) {
  state.session = session;
  state.api = new ChatKitApi(state.base, authFor(session));
  $("sign-in").hidden = true;
  $("chat").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `Signed in as ${session.user}`;
  await guard(() => loadThreads());
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("thread");
  if (fromHash) await openThread(fromHash);
  else newChat();
}

async function signOut(message) {
  await stopStream();
  localStorage.removeItem(sessionKey());
  Object.assign(state, { session: null, api: null, threadId: null, threadsAfter: null });
  setHash(null);
  transcript.clear();
  setPending([]);
  $("thread-list").replaceChildren();
  $("thread-list").setAttribute("aria-busy", "true");
  showSignIn(message);
}

async function submitSignIn(event, makeSession) {
  event.preventDefault();
  try {
    const session = await makeSession();
    saveSession(session);
    await startChat(session);
  } catch (error) {
    showSignIn(error.message || String(error));
  }
}

// ------------------------------------------------------------------ threads

function setHash(threadId) {
  const url = location.pathname + location.search + (threadId ? `#thread=${threadId}` : "");
  history.replaceState(null, "", url);
}

function threadRow(thread) {
  const row = document.createElement("li");
  row.className = "thread";
  row.dataset.threadId = thread.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "thread-open";
  open.addEventListener("click", () => guard(() => openThread(thread.id)));
  const rename = document.createElement("button");
  rename.type = "button";
  rename.className = "thread-rename icon";
  rename.textContent = "✎";
  rename.title = "Rename";
  rename.setAttribute("aria-label", "Rename");
  rename.addEventListener("click", () => startRename(row));
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "thread-delete icon";
  remove.textContent = "✕";
  remove.title = "Delete";
  remove.setAttribute("aria-label", "Delete");
  remove.addEventListener("click", () => guard(() => deleteThread(row, remove)));
  row.append(open, rename, remove);
  setRowTitle(row, thread.title);
  return row;
}

function setRowTitle(row, title) {
  row.dataset.title = title || "";
  row.querySelector(".thread-open").textContent = title || "New chat";
}

function markCurrent() {
  for (const row of $("thread-list").children) {
    row.classList.toggle("current", row.dataset.threadId === state.threadId);
  }
}

async function loadThreads({ more = false } = {}) {
  const params = { limit: THREAD_PAGE_SIZE, order: "desc" };
  if (more && state.threadsAfter) params.after = state.threadsAfter;
  $("thread-list").setAttribute("aria-busy", "true");
  let page;
  try {
    page = await state.api.call("threads.list", params);
  } finally {
    $("thread-list").setAttribute("aria-busy", "false");
  }
  if (!more) $("thread-list").replaceChildren();
  const shown = new Set([...$("thread-list").children].map((row) => row.dataset.threadId));
  for (const thread of page.data) {
    if (!shown.has(thread.id)) $("thread-list").append(threadRow(thread));
  }
  state.threadsAfter = page.has_more ? (page.after ?? page.data.at(-1)?.id ?? null) : null;
  $("more-threads").hidden = !state.threadsAfter;
  markCurrent();
}

function startRename(row) {
  const input = document.createElement("input");
  input.className = "thread-title-input";
  input.value = row.dataset.title;
  input.maxLength = 500;
  input.setAttribute("aria-label", "Thread title");
  const label = row.querySelector(".thread-open");
  label.hidden = true;
  row.prepend(input);
  input.focus();
  input.select();
  let finished = false;
  const finish = async (save) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    input.remove();
    label.hidden = false;
    if (!save || !title || title === row.dataset.title) return;
    await guard(async () => {
      const thread = await state.api.call("threads.update", {
        thread_id: row.dataset.threadId,
        title,
      });
      setRowTitle(row, thread.title);
    });
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(false));
}

async function deleteThread(row, button) {
  if (!button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "Delete?";
    setTimeout(() => {
      button.classList.remove("confirm");
      button.textContent = "✕";
    }, CONFIRM_DELETE_MS);
    return;
  }
  const threadId = row.dataset.threadId;
  if (threadId === state.threadId) await stopStream();
  await state.api.call("threads.delete", { thread_id: threadId });
  row.remove();
  if (threadId === state.threadId) newChat();
}

async function openThread(threadId) {
  await stopStream();
  state.threadId = threadId;
  setHash(threadId);
  markCurrent();
  transcript.clear();
  $("earlier-items").hidden = true;
  let page;
  try {
    page = await state.api.call("items.list", {
      thread_id: threadId,
      limit: ITEM_PAGE_SIZE,
      order: "desc",
    });
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    newChat();
    transcript.showNotice("warning", "That conversation does not exist (or is not yours).");
    return;
  }
  transcript.show([...page.data].reverse());
  setItemsAfter(page);
  const scroller = $("transcript").parentElement;
  scroller.scrollTop = scroller.scrollHeight;
}

function setItemsAfter(page) {
  state.itemsAfter = page.has_more ? (page.after ?? page.data.at(-1)?.id ?? null) : null;
  $("earlier-items").hidden = !state.itemsAfter;
}

async function loadEarlier() {
  const threadId = state.threadId;
  const page = await state.api.call("items.list", {
    thread_id: threadId,
    limit: ITEM_PAGE_SIZE,
    order: "desc",
    after: state.itemsAfter,
  });
  if (threadId !== state.threadId) return;
  const scroller = $("transcript").parentElement;
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  transcript.show([...page.data].reverse(), { before: true });
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
  setItemsAfter(page);
}

function newChat() {
  state.threadId = null;
  setHash(null);
  markCurrent();
  transcript.clear();
  $("earlier-items").hidden = true;
  $("message-input").focus();
}

// ------------------------------------------------------------------ turns

function setStreaming(streaming) {
  $("composer").setAttribute("aria-busy", String(streaming));
  $("send").disabled = streaming || state.uploading > 0;
  $("stop").hidden = !streaming;
  $("stop").disabled = false;
  transcript.setBusy(streaming);
}

function handleEvent(event) {
  switch (event.type) {
    case "thread.created": {
      state.threadId = event.thread.id;
      setHash(event.thread.id);
      $("thread-list").prepend(threadRow(event.thread));
      markCurrent();
      break;
    }
    case "thread.updated": {
      const row = $("thread-list").querySelector(`[data-thread-id="${CSS.escape(event.thread.id)}"]`);
      if (row) setRowTitle(row, event.thread.title);
      break;
    }
    case "thread.item.added":
      transcript.upsert(event.item, false);
      break;
    case "thread.item.done":
    case "thread.item.replaced":
      transcript.upsert(event.item, true);
      break;
    case "thread.item.updated":
      transcript.update(event.item_id, event.update);
      break;
    case "thread.item.removed":
      transcript.remove(event.item_id);
      break;
    case "stream_options":
      $("stop").disabled = !event.stream_options.allow_cancel;
      break;
    case "progress_update":
      transcript.setProgress(event.text);
      break;
    case "error":
      transcript.setProgress(null);
      transcript.showError(event.message || "Something went wrong.", event.allow_retry);
      break;
    case "notice":
      transcript.showNotice(event.level, event.message);
      break;
    default:
      break; // client effects and anything newer: nothing to show
  }
}

/** Stream one operation into the transcript; false when it failed before any event. */
async function runStream(type, params) {
  const controller = new AbortController();
  let received = false;
  let finish;
  state.controller = controller;
  state.streamDone = new Promise((resolve) => (finish = resolve));
  setStreaming(true);
  try {
    for await (const event of state.api.stream(type, params, controller.signal)) {
      received = true;
      handleEvent(event);
    }
    transcript.settle();
  } catch (error) {
    if (error.name === "AbortError") transcript.settle({ stopped: true });
    else if (error instanceof ApiError) reportError(error);
    else {
      transcript.settle();
      transcript.showError(`The connection to the server broke off (${error.message}).`, true);
    }
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setStreaming(false);
    }
    finish();
  }
  return received;
}

/** Stop the answer in progress (the server keeps what was written) and wait for it to end. */
async function stopStream() {
  if (!state.controller) return;
  const done = state.streamDone;
  state.controller.abort();
  await done;
}

async function send(event) {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || state.controller || state.uploading) return;
  input.value = "";
  const attachments = state.pending;
  setPending([]);
  const message = {
    content: [{ type: "input_text", text }],
    attachments: attachments.map((attachment) => attachment.id),
    inference_options: {},
  };
  const started = state.threadId
    ? await runStream("threads.add_user_message", { thread_id: state.threadId, input: message })
    : await runStream("threads.create", { input: message });
  if (!started) {
    if (!input.value) input.value = text;
    if (!state.pending.length) setPending(attachments);
  }
}

// ------------------------------------------------------------------ attachments

/** Show the attachments waiting for the next message, each with a remove button. */
function setPending(attachments) {
  state.pending = attachments;
  const list = attachmentList(attachments, $("pending-attachments"));
  for (const entry of list.children) {
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "attachment-remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${entry.querySelector(".attachment-name").textContent}`);
    const id = entry.dataset.attachmentId;
    remove.addEventListener("click", () => guard(() => removePending(id)));
    entry.append(remove);
  }
  updateSendState();
}

function updateSendState() {
  $("send").disabled = Boolean(state.controller) || state.uploading > 0;
  $("composer").dataset.uploading = String(state.uploading > 0);
}

async function removePending(attachmentId) {
  setPending(state.pending.filter((attachment) => attachment.id !== attachmentId));
  await state.api.call("attachments.delete", { attachment_id: attachmentId });
}

/** Two-phase upload: `attachments.create`, then the bytes where its upload_descriptor says. */
async function attachFile(file) {
  state.uploading += 1;
  updateSendState();
  try {
    const created = await state.api.call("attachments.create", {
      name: file.name,
      size: file.size,
      mime_type: file.type || "application/octet-stream",
    });
    const uploaded = await state.api.upload(created, file);
    setPending([...state.pending, uploaded]);
  } finally {
    state.uploading -= 1;
    updateSendState();
  }
}

async function attachFiles(files) {
  for (const file of files) await guard(() => attachFile(file));
}

async function feedback(itemId, kind) {
  const threadId = state.threadId;
  return guard(() =>
    state.api.call("items.feedback", { thread_id: threadId, item_ids: [itemId], kind }),
  );
}

async function retry(itemId) {
  if (state.controller) return;
  const userMessageId = transcript.userMessageBefore(itemId);
  if (!userMessageId) return;
  transcript.removeAfter(userMessageId);
  await runStream("threads.retry_after_item", {
    thread_id: state.threadId,
    item_id: userMessageId,
  });
}

/** A widget button's server action: the server streams the updated widget item back. */
async function widgetAction(itemId, action) {
  if (state.controller || !state.threadId) return;
  await runStream("threads.custom_action", {
    thread_id: state.threadId,
    item_id: itemId,
    action: { type: action.type, payload: action.payload },
  });
}

// ------------------------------------------------------------------ start

function wire() {
  $("name-form").addEventListener("submit", (event) =>
    submitSignIn(event, () => nameSession($("name-input").value.trim())),
  );
  $("token-form").addEventListener("submit", (event) =>
    submitSignIn(event, async () => tokenSession($("token-input").value.trim())),
  );
  $("sign-out").addEventListener("click", () => signOut());
  $("new-thread").addEventListener("click", () => guard(async () => {
    await stopStream();
    newChat();
  }));
  $("more-threads").addEventListener("click", () => guard(() => loadThreads({ more: true })));
  $("earlier-items").addEventListener("click", () => guard(loadEarlier));
  $("composer").addEventListener("submit", send);
  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("attach").addEventListener("click", () => $("attach-input").click());
  $("attach-input").addEventListener("change", async (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    await attachFiles(files);
  });
}

async function main() {
  initTheme();
  try {
    state.base = apiBaseFrom(location);
  } catch (error) {
    showSignIn(error.message);
    $("name-form").hidden = true;
    return;
  }
  if (state.base !== location.origin) {
    $("api-origin").hidden = false;
    $("api-origin").textContent = `API: ${state.base}`;
  }
  try {
    state.signIn = (await fetchConfig(state.base)).sign_in;
  } catch (error) {
    showSignIn(`Cannot reach the server at ${state.base}: ${error.message}`);
    $("name-form").hidden = true;
    return;
  }
  wire();
  const session = loadSession();
  if (session) await startChat(session);
  else showSignIn();
}

// `data-ready` tells tests (and anyone curious) that start-up has finished.
main().finally(() => {
  document.body.dataset.ready = "true";
});
