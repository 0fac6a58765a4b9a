// The conversation on screen: ChatKit thread items as list entries, updated by stream events.

import { renderMarkdown } from "./markdown.js";
import { renderWidget } from "./widgets.js";

const HIDDEN_TYPES = new Set(["end_of_turn", "hidden_context_item", "sdk_hidden_context"]);
const NEAR_BOTTOM_PX = 80;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function userText(item) {
  return (item.content || [])
    .map((part) => (part.type === "input_tag" ? `@${part.text}` : part.text || ""))
    .join(" ");
}

function assistantText(item) {
  return (item.content || [])
    .filter(Boolean)
    .map((part) => part.text || "")
    .join("\n\n");
}

function taskNode(task) {
  const status = task.status_indicator || "none";
  const node = element("li", `task task-${status}`);
  node.append(element("span", "task-status", status === "complete" ? "✓" : ""));
  node.append(element("span", "task-title", task.title || task.type || "Task"));
  if (task.content) node.append(element("div", "task-content", task.content));
  return node;
}

/**
 * Whether the page may show a preview URL: an image data URL, or a link on the page's own
 * origin (the page's policy loads images from nowhere else; other links show the name only).
 */
export function safeImageUrl(url) {
  if (typeof url !== "string") return false;
  if (url.startsWith("data:")) return /^data:image\/(png|jpeg|webp|gif);base64,/.test(url);
  try {
    return new URL(url).origin === location.origin;
  } catch {
    return false;
  }
}

/** A message's attachments: image previews, and file names for the rest. */
export function attachmentList(attachments, list = element("ul", "attachments")) {
  list.replaceChildren();
  for (const attachment of attachments) {
    const entry = element("li", `attachment attachment-${attachment.type === "image" ? "image" : "file"}`);
    entry.dataset.attachmentId = attachment.id || "";
    if (attachment.type === "image" && safeImageUrl(attachment.preview_url)) {
      const image = document.createElement("img");
      image.src = attachment.preview_url;
      image.alt = attachment.name || "image";
      entry.append(image);
    }
    entry.append(element("span", "attachment-name", attachment.name || "file"));
    list.append(entry);
  }
  return list;
}

function workflowTitle(workflow, done) {
  if (workflow.summary?.title) return workflow.summary.title;
  if (workflow.summary?.duration !== undefined) return `Worked for ${workflow.summary.duration}s`;
  return done ? "Used tools" : "Working…";
}

/** Renders and updates the items of one thread inside `list` (an <ol>). */
export class Transcript {
  /**
   * @param {HTMLOListElement} list
   * @param {{onFeedback: (id: string, kind: string) => Promise<boolean>,
   *          onRetry: (id: string | null) => void,
   *          onWidgetAction: (id: string, action: {type: string, payload: object}) => void}} actions
   */
  constructor(list, actions) {
    this.list = list;
    this.actions = actions;
    this.entries = new Map();
    this.progress = null;
    this.busy = false;
  }

  clear() {
    this.list.replaceChildren();
    this.entries.clear();
    this.progress = null;
  }

  /** Show stored items (oldest first), below what is shown or, with `before`, above it. */
  show(items, { before = false } = {}) {
    const fragment = document.createDocumentFragment();
    for (const item of items) {
      if (!HIDDEN_TYPES.has(item.type)) fragment.append(this.build(item, true).node);
    }
    this.keepBottom(() => (before ? this.list.prepend(fragment) : this.list.append(fragment)));
    this.refreshActions();
  }

  /** Add an item or replace it with a newer version (`done` once the server says so). */
  upsert(item, done) {
    if (HIDDEN_TYPES.has(item.type)) return;
    const previous = this.entries.get(item.id);
    const entry = this.build(item, done, previous);
    this.keepBottom(() => {
      if (previous) previous.node.replaceWith(entry.node);
      else if (this.progress) this.progress.before(entry.node);
      else this.list.append(entry.node);
    });
    this.refreshActions();
  }

  /** Apply a `thread.item.updated` update. */
  update(itemId, update) {
    const entry = this.entries.get(itemId);
    if (!entry) return;
    const item = entry.item;
    switch (update.type) {
      case "assistant_message.content_part.added":
      case "assistant_message.content_part.done":
        item.content[update.content_index] = update.content;
        break;
      case "assistant_message.content_part.text_delta": {
        const part = (item.content[update.content_index] ??= { type: "output_text", text: "" });
        part.text += update.delta;
        break;
      }
      case "workflow.task.added":
      case "workflow.task.updated":
        item.workflow.tasks[update.task_index] = update.task;
        break;
      default:
        return;
    }
    this.keepBottom(() => this.paint(entry));
  }

  remove(itemId) {
    const entry = this.entries.get(itemId);
    if (!entry) return;
    entry.node.remove();
    this.entries.delete(itemId);
    this.refreshActions();
  }

  /** Remove everything shown after the item (what a retry replaces). */
  removeAfter(itemId) {
    const entry = this.entries.get(itemId);
    if (!entry) return;
    while (entry.node.nextSibling) {
      const node = entry.node.nextSibling;
      if (node.dataset.itemId) this.entries.delete(node.dataset.itemId);
      if (node === this.progress) this.progress = null;
      node.remove();
    }
    this.refreshActions();
  }

  /** The id of the last user message at or before `itemId` (or of all, when null). */
  userMessageBefore(itemId) {
    let node = itemId ? this.entries.get(itemId)?.node : this.list.lastElementChild;
    while (node) {
      if (node.dataset.type === "user_message") return node.dataset.itemId;
      node = node.previousElementSibling;
    }
    return null;
  }

  /** Close answers still streaming; with `stopped`, label them as stopped by the user. */
  settle({ stopped = false } = {}) {
    for (const entry of this.entries.values()) {
      if (entry.done) continue;
      entry.done = true;
      entry.stopped = stopped && entry.item.type === "assistant_message";
      this.paint(entry);
    }
    this.setProgress(null);
    this.refreshActions();
  }

  showError(message, allowRetry) {
    const node = element("li", "item item-error");
    node.setAttribute("role", "alert");
    node.append(element("span", "error-text", message));
    if (allowRetry && this.userMessageBefore(null)) {
      const retry = element("button", "action", "Retry");
      retry.type = "button";
      retry.dataset.action = "retry";
      retry.addEventListener("click", () => this.actions.onRetry(null));
      node.append(retry);
    }
    this.keepBottom(() => this.list.append(node));
    this.setBusy(this.busy);
  }

  showNotice(level, message) {
    const node = element("li", `item item-notice notice-${level}`, message);
    node.setAttribute("role", "status");
    this.keepBottom(() => this.list.append(node));
  }

  /** A transient line about work in progress; null removes it. */
  setProgress(text) {
    if (text == null) {
      this.progress?.remove();
      this.progress = null;
      return;
    }
    if (!this.progress) {
      this.progress = element("li", "item item-progress");
      this.keepBottom(() => this.list.append(this.progress));
    }
    this.progress.textContent = text;
  }

  /** While an answer streams, feedback and retry wait. */
  setBusy(busy) {
    this.busy = busy;
    for (const button of this.list.querySelectorAll("button[data-action]")) {
      button.disabled = busy;
    }
  }

  build(item, done, previous) {
    const node = element("li", `item item-${item.type.replaceAll("_", "-")}`);
    node.dataset.itemId = item.id;
    node.dataset.type = item.type;
    if (item.type === "assistant_message") item.content = [...(item.content || [])];
    if (item.type === "workflow") item.workflow.tasks = [...(item.workflow.tasks || [])];
    const entry = { item, node, done, stopped: false, feedback: previous?.feedback ?? null };
    this.entries.set(item.id, entry);
    this.paint(entry);
    return entry;
  }

  paint(entry) {
    const { item, node } = entry;
    node.classList.toggle("streaming", !entry.done);
    switch (item.type) {
      case "user_message": {
        const bubble = element("div", "bubble", userText(item));
        node.replaceChildren(bubble);
        if (item.attachments?.length) node.append(attachmentList(item.attachments));
        break;
      }
      case "widget": {
        const onAction = (action) => this.actions.onWidgetAction(item.id, action);
        const widget = element("div", "widget");
        widget.append(renderWidget(item.widget || {}, { onAction }));
        node.replaceChildren(widget);
        for (const button of widget.querySelectorAll("button[data-action]")) {
          button.disabled = this.busy;
        }
        break;
      }
      case "assistant_message": {
        const bubble = element("div", "bubble markdown");
        bubble.append(renderMarkdown(assistantText(item)));
        node.replaceChildren(bubble);
        if (entry.stopped) node.append(element("div", "item-note", "Stopped"));
        if (entry.done) node.append(this.messageActions(entry));
        break;
      }
      case "workflow": {
        const details = element("details", "workflow");
        details.open = !entry.done || item.workflow.expanded;
        details.append(element("summary", "", workflowTitle(item.workflow, entry.done)));
        const tasks = element("ul", "tasks");
        for (const task of item.workflow.tasks) if (task) tasks.append(taskNode(task));
        details.append(tasks);
        node.replaceChildren(details);
        break;
      }
      case "task": {
        const tasks = element("ul", "tasks");
        tasks.append(taskNode(item.task));
        node.replaceChildren(tasks);
        break;
      }
      default:
        node.replaceChildren(element("div", "item-note", `(${item.type} item)`));
    }
  }

  messageActions(entry) {
    const bar = element("div", "item-actions");
    const button = (label, action, text) => {
      const node = element("button", "action", text);
      node.type = "button";
      node.dataset.action = action;
      node.setAttribute("aria-label", label);
      node.title = label;
      node.disabled = this.busy;
      bar.append(node);
      return node;
    };
    for (const [kind, label, text] of [
      ["positive", "Good answer", "▲"],
      ["negative", "Bad answer", "▼"],
    ]) {
      const node = button(label, `feedback-${kind}`, text);
      node.setAttribute("aria-pressed", String(entry.feedback === kind));
      node.addEventListener("click", async () => {
        if (!(await this.actions.onFeedback(entry.item.id, kind))) return;
        entry.feedback = kind;
        for (const other of bar.querySelectorAll("[aria-pressed]")) {
          other.setAttribute("aria-pressed", String(other === node));
        }
      });
    }
    const retry = button("Retry", "retry", "Retry");
    retry.addEventListener("click", () => this.actions.onRetry(entry.item.id));
    return bar;
  }

  /** Retry only on the last answer: a retry replaces everything after its question. */
  refreshActions() {
    const answers = [...this.list.querySelectorAll(".item-assistant-message")];
    answers.forEach((node, index) => {
      const retry = node.querySelector('[data-action="retry"]');
      if (retry) retry.hidden = index !== answers.length - 1;
    });
  }

  /** Run a change and keep the view pinned to the bottom if it was there. */
  keepBottom(change) {
    const scroller = this.list.parentElement;
    const pinned =
      scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
    change();
    if (pinned) scroller.scrollTop = scroller.scrollHeight;
  }
}
