"""Test-only fault injection: errors and latency around the model run, installed when set.

It exists so tests and the demo can build a bad canary version; faults are counted in the
metrics like real failures.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from .batching import Arrays
from .errors import InferenceFailedError
from .settings import Settings

Infer = Callable[[Arrays], Awaitable[Arrays]]


def with_faults(infer: Infer, settings: Settings) -> Infer:
    """``infer`` itself when no fault is configured, else ``infer`` wrapped with the faults."""
    ratio = settings.fault_error_ratio
    delay_s = settings.fault_latency_ms / 1000.0
    if ratio <= 0 and delay_s <= 0:
        return infer
    # Faults begin fault_after_s after start: a version that passes its canary, then regresses.
    begins = time.monotonic() + settings.fault_after_s

    async def faulty(feeds: Arrays) -> Arrays:
        if time.monotonic() >= begins:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            if ratio > 0 and random.random() < ratio:
                raise InferenceFailedError("injected fault (MODELSERVER_FAULT_ERROR_RATIO)")
        return await infer(feeds)

    return faulty
