"""The `kubectl modelrollout` plugin. It talks to the API server only; it never imports kopf."""

from modelrollout.cli.commands import main

__all__ = ["main"]
