"use client";

import { ChatKit, useChatKit } from "@openai/chatkit-react";
import { useRouter } from "next/navigation";
import Script from "next/script";
import { useState } from "react";

import { authClient } from "@/lib/auth-client";
import {
  TokenCache,
  TokenUnavailableError,
  betterAuthTokenFetcher,
  createChatKitFetch,
} from "@/lib/chatkit-fetch";
import {
  ATTACHMENT_ACCEPT,
  ATTACHMENT_MAX_BYTES,
  createTaskSearch,
  modelChoices,
  tasksUrlFor,
} from "@/lib/composer-options";

// Both are inlined when the app is built (`next build`) or started (`next dev`).
const API_URL = process.env.NEXT_PUBLIC_CHATKIT_API_URL || "http://127.0.0.1:8001/api/chatkit";
// OpenAI checks the domain key for deployed sites; on localhost any non-empty value works.
const DOMAIN_KEY = process.env.NEXT_PUBLIC_CHATKIT_DOMAIN_KEY || "domain_pk_localhost_dev";
// The <openai-chatkit> element is defined by this script on OpenAI's CDN (npm has only its
// types and the React bindings): the page needs internet, the chat server does not.
const CHATKIT_SCRIPT = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js";
// The model picker: a comma list, in step with the server's OPENAI_MODELS (first = default).
const MODELS = modelChoices(process.env.NEXT_PUBLIC_CHATKIT_MODELS);

/** ChatKit wired to the chat server, with Better Auth tokens as bearer tokens. */
export function ChatPanel({ userName }: { userName: string }) {
  const router = useRouter();
  const [scriptFailed, setScriptFailed] = useState(false);
  // One token cache per page: tokens from this app's /api/auth/token, sent only to API_URL.
  const [tokens] = useState(() => new TokenCache({ fetchToken: betterAuthTokenFetcher() }));
  const [chatkitFetch] = useState(() => {
    const send = createChatKitFetch({ apiUrl: API_URL, tokens });
    return async (input: RequestInfo | URL, init?: RequestInit) => {
      try {
        return await send(input, init);
      } catch (error) {
        // The session is gone (signed out elsewhere, expired): back to the sign-in page.
        if (error instanceof TokenUnavailableError && error.status === 401) {
          router.replace("/sign-in");
        }
        throw error;
      }
    };
  });

  // @-mentions of the user's tasks: the server's /api/tasks, with the same bearer token.
  const [searchTasks] = useState(() =>
    createTaskSearch({ tasksUrl: tasksUrlFor(API_URL), fetch: chatkitFetch }),
  );

  const { control } = useChatKit({
    // two_phase: `attachments.create`, then the bytes go to the returned upload_descriptor
    // (through `fetch`, so they carry the bearer token too).
    api: {
      url: API_URL,
      domainKey: DOMAIN_KEY,
      fetch: chatkitFetch,
      uploadStrategy: { type: "two_phase" },
    },
    history: { enabled: true, showRename: true, showDelete: true },
    threadItemActions: { feedback: true, retry: true },
    composer: {
      attachments: {
        enabled: true,
        maxSize: ATTACHMENT_MAX_BYTES,
        maxCount: 10,
        accept: ATTACHMENT_ACCEPT,
      },
      ...(MODELS.length > 1 ? { models: MODELS } : {}),
    },
    entities: { onTagSearch: searchTasks, showComposerMenu: true },
    // The task widget's Done/Delete buttons are server actions (`handler: "server"`): ChatKit
    // sends them as `threads.custom_action` itself, so no `widgets.onAction` is needed.
    startScreen: {
      greeting: "What should go on your list?",
      prompts: [
        { label: "Add a task", prompt: "add task buy milk" },
        { label: "List my tasks", prompt: "list tasks" },
      ],
    },
  });

  async function signOut() {
    await authClient.signOut();
    tokens.clear();
    router.replace("/sign-in");
  }

  return (
    <main className="chat">
      <header className="bar">
        <strong>ChatKit starter</strong>
        <span>
          {userName} · <button onClick={signOut}>Sign out</button>
        </span>
      </header>
      <Script
        src={CHATKIT_SCRIPT}
        strategy="afterInteractive"
        onError={() => setScriptFailed(true)}
      />
      {scriptFailed ? (
        <p className="error notice">
          The ChatKit component could not be loaded from {new URL(CHATKIT_SCRIPT).host}. This page
          needs internet access for it (the chat server does not).
        </p>
      ) : (
        <ChatKit control={control} className="chatkit" />
      )}
    </main>
  );
}
