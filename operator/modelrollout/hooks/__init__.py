"""Carrying out rollout hooks: HTTP calls and Jobs, run asynchronously beside the reconciles
(which only start them and read their results; plan/hooks.py decides which run)."""
