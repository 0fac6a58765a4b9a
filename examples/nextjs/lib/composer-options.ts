// What the ChatKit composer offers with this server: attachments, a model picker from an
// environment list, and @-mentions of the user's tasks (searched on the server's /api/tasks).
//
// No React or Next.js imports here: the module runs in the browser and under `node --test`.

import type { FetchLike } from "./chatkit-fetch";

/** A ChatKit entity (the shape `entities.onTagSearch` resolves to, from @openai/chatkit). */
export interface TaskEntity {
  id: string;
  title: string;
  group: string;
  interactive: boolean;
  data: Record<string, string>;
}

/** A model option for `composer.models`. */
export interface ModelChoice {
  id: string;
  label: string;
  default?: boolean;
}

/** The server's default `ATTACHMENT_TYPES`, as the file picker's `accept` map. */
export const ATTACHMENT_ACCEPT: Record<string, string[]> = {
  "image/png": [".png"],
  "image/jpeg": [".jpg", ".jpeg"],
  "image/webp": [".webp"],
  "image/gif": [".gif"],
  "application/pdf": [".pdf"],
  "text/plain": [".txt"],
  "text/markdown": [".md"],
  "text/csv": [".csv"],
};

/** The server's default `ATTACHMENT_MAX_BYTES` (10 MiB). */
export const ATTACHMENT_MAX_BYTES = 10 * 1024 * 1024;

/**
 * `composer.models` from a comma list (e.g. `NEXT_PUBLIC_CHATKIT_MODELS`, kept in step with the
 * server's `OPENAI_MODELS`); the first is the default. An empty list: no model picker.
 */
export function modelChoices(list: string | undefined): ModelChoice[] {
  const ids = [...new Set((list ?? "").split(",").map((id) => id.trim()).filter(Boolean))];
  return ids.map((id, index) => (index === 0 ? { id, label: id, default: true } : { id, label: id }));
}

/**
 * The task search URL next to the ChatKit endpoint: `<server>/api/chatkit` -> `<server>/api/tasks`
 * (a relative endpoint gives a relative path, resolved against the page when searching).
 */
export function tasksUrlFor(apiUrl: string): string {
  if (/^https?:\/\//i.test(apiUrl)) return new URL("tasks", apiUrl).href;
  const path = apiUrl.split(/[?#]/, 1)[0];
  return path.slice(0, path.lastIndexOf("/") + 1) + "tasks";
}

function pageUrl(): string | undefined {
  return (globalThis as { location?: { href?: string } }).location?.href;
}

interface TaskRow {
  id: unknown;
  title: unknown;
  completed: unknown;
}

/**
 * An `entities.onTagSearch` that asks `GET <tasksUrl>?query=&limit=` (through the authenticated
 * ChatKit fetch) and turns each task into the tag the server reads as a task mention.
 * A failed search shows no suggestions rather than breaking the composer.
 */
export function createTaskSearch(options: {
  tasksUrl: string;
  fetch: FetchLike;
  limit?: number;
}): (query: string) => Promise<TaskEntity[]> {
  const limit = options.limit ?? 8;
  return async (query) => {
    const url = new URL(options.tasksUrl, pageUrl());
    url.searchParams.set("query", query);
    url.searchParams.set("limit", String(limit));
    let response: Response;
    try {
      response = await options.fetch(url.href, {
        method: "GET",
        headers: { Accept: "application/json" },
      });
    } catch {
      return [];
    }
    if (!response.ok) return [];
    const body = (await response.json()) as { data?: unknown };
    if (!Array.isArray(body?.data)) return [];
    return (body.data as TaskRow[]).flatMap((task) => {
      const id = typeof task.id === "number" || typeof task.id === "string" ? String(task.id) : "";
      if (!id || typeof task.title !== "string") return [];
      return [
        {
          id: `task:${id}`,
          title: task.title,
          group: "Tasks",
          interactive: false,
          data: { task_id: id, title: task.title },
        },
      ];
    });
  };
}
