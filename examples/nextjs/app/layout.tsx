import type { Metadata } from "next";
import Script from "next/script";
import type { ReactNode } from "react";

import "./globals.css";

// The <openai-chatkit> element is defined by this script on OpenAI's CDN (npm has only its
// types and the React bindings): the page needs internet, the chat server does not.
const CHATKIT_SCRIPT = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js";

export const metadata: Metadata = {
  title: "ChatKit starter",
  description: "Next.js + Better Auth + ChatKit against a self-hosted ChatKit server",
};

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <Script src={CHATKIT_SCRIPT} strategy="afterInteractive" />
        {children}
      </body>
    </html>
  );
}
