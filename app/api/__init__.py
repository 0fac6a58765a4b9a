"""Thin routes: /api/chatkit, /health, /ready."""
