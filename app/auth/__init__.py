"""Bearer token -> verified Principal (JWKS cache, shared-secret mode)."""
