"""Model providers, instructions and the per-request agent."""
