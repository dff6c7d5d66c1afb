"""Delivering rollout notifications: the status outbox (plan/notify.py) sent to the notifiers
the operator is configured with, in the background, retried with backoff."""
