import { getAuth } from "@/lib/auth";

// Every Better Auth endpoint: sign-up, sign-in, sign-out, get-session, token, jwks.
async function handle(request: Request): Promise<Response> {
  const auth = await getAuth();
  return auth.handler(request);
}

export { handle as GET, handle as POST };
