"""ChatKit agent server: an authenticated ChatKit backend with a TODO task agent."""
