"""How the consumer receives bytes: :class:`InOrder` (object order) or :class:`Unordered`
(``(offset, data)`` as soon as any chunk has them). Each is a small object the window asks
which chunk is the head, which event wakes the consumer and whether a chunk may read on;
nothing else in the engine needs to know which one is in use (cf. rclone's chunkedreader
and s3transfer's DeferQueue: order is a mechanism, not a flag)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Protocol

from .slot import Slot
from .stats import Stats


class Window(Protocol):
    """What delivery needs of the window (``window.Window``), which in turn holds a delivery."""

    order: list[Slot]
    buffered: int
    max_buffer: int
    stats: Stats
    consumer_waited: float
    consumer_waiting_since: float | None

    def take(self, slot: Slot) -> bytes: ...
    def fail(self, slot: Slot) -> None: ...
    def retire(self, slot: Slot) -> None: ...
    def cancel_all(self) -> None: ...

# Bytes the head chunk may queue ahead of a slow consumer, whatever max_buffer says.
HEAD_QUEUE = 2 << 20


class InOrder:
    """Every byte in object order: the consumer drains the first chunk of the window only."""

    head_blocks = True  # a slow head holds back every chunk behind it: worth splitting

    def wakeup(self) -> asyncio.Event:
        return asyncio.Event()  # one per chunk: only the head's wakes the consumer

    def head(self, order: list[Slot]) -> Slot | None:
        return order[0] if order else None

    def may_read(self, window: Window, slot: Slot) -> bool:
        if window.order and window.order[0] is slot:
            return slot.buffered < HEAD_QUEUE
        # A split-off of the head may run past the budget, by at most its own head queue.
        return window.buffered < window.max_buffer or (slot.urgent and slot.buffered < HEAD_QUEUE)

    async def iterate(self, window: Window) -> AsyncGenerator[bytes, None]:
        complete = False
        try:
            while window.order:
                slot = window.order[0]
                pieces = slot.pieces
                while True:
                    if pieces:
                        yield window.take(slot)
                    elif slot.finished:
                        break
                    else:
                        slot.wakeup.clear()
                        since = window.consumer_waiting_since = time.monotonic()  # the read-ahead horizon's clock
                        try:
                            await slot.wakeup.wait()
                        finally:
                            window.consumer_waited += time.monotonic() - since
                            window.consumer_waiting_since = None
                if slot.error is not None:
                    window.fail(slot)
                window.retire(slot)
            complete = True
            window.stats.finished = time.monotonic()
        finally:
            if not complete:
                # Breaking out of ``async for`` lands here (via the generator's
                # aclose): stop the network at once; __aexit__ awaits the tasks.
                window.cancel_all()


class Unordered:
    """``(offset, data)`` from whichever chunk has bytes; the head is the lowest chunk still fetching."""

    head_blocks = False  # the consumer takes any chunk's bytes: no chunk holds back another

    def __init__(self) -> None:
        self.any_piece = asyncio.Event()  # every chunk wakes the consumer

    def wakeup(self) -> asyncio.Event:
        return self.any_piece

    def head(self, order: list[Slot]) -> Slot | None:
        return next((s for s in order if not s.finished), None)

    def may_read(self, window: Window, slot: Slot) -> bool:
        return window.buffered < max(window.max_buffer, HEAD_QUEUE)

    async def iterate(self, window: Window) -> AsyncGenerator[tuple[int, bytes], None]:
        complete = False
        try:
            while window.order:
                self.any_piece.clear()
                for slot in list(window.order):
                    while slot.pieces:
                        offset = slot.out
                        yield offset, window.take(slot)
                    if slot.finished and not slot.pieces:
                        if slot.error is not None:
                            window.fail(slot)
                        window.retire(slot)
                if window.order and not any(s.pieces or s.finished for s in window.order):
                    await self.any_piece.wait()
            complete = True
            window.stats.finished = time.monotonic()
        finally:
            if not complete:
                window.cancel_all()
