import { createAuthClient } from "better-auth/react";

/** Better Auth in the browser, talking to this app's /api/auth routes. */
export const authClient = createAuthClient();
