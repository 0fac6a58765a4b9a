import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // The SQLite driver loads a native binary at run time: keep it out of the server bundle.
  serverExternalPackages: ["libsql"],
};

export default nextConfig;
