import { headers } from "next/headers";
import { redirect } from "next/navigation";

import { ChatPanel } from "@/components/chat-panel";
import { getAuth } from "@/lib/auth";

export default async function Home() {
  // Reading the request first makes this page dynamic: nothing here runs at build time.
  const requestHeaders = await headers();
  const auth = await getAuth();
  const session = await auth.api.getSession({ headers: requestHeaders });
  if (!session) redirect("/sign-in");
  return <ChatPanel userName={session.user.name || session.user.email} />;
}
