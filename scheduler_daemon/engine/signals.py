"""Test signals: what a loop reports having done, for a test to await instead of guessing.

Each loop has a ``signals`` object of its own kind (``DiscoverySignals``, ``CompleterSignals``,
...) whose ``Signal`` fields it emits as it goes: a claim round ended, a batch was recorded, a
sweep is done, it went to sleep. Unarmed, the default, an emit is a single check and keeps
nothing, so a daemon pays nothing for them. A test arms them (``signals.arm()``, before the
loop runs) and awaits the values in order: every emitted value is kept until a ``next`` takes
it, so a test never misses what happened before it started waiting.

Signals are emitted and awaited on the loop's event loop (they are ``asyncio`` objects).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Generic, Self, TypeVar

T = TypeVar("T")

# A broken test fails instead of hanging; never part of what a test asserts.
GUARD_S = 5.0


class Signal(Generic[T]):
    """One kind of event a loop reports; see the module docstring."""

    __slots__ = ("_name", "_values")

    def __init__(self, name: str) -> None:
        self._name = name
        self._values: asyncio.Queue[T] | None = None

    def __repr__(self) -> str:
        return f"Signal({self._name!r}, armed={self.armed})"

    @property
    def armed(self) -> bool:
        return self._values is not None

    def arm(self) -> None:
        """Keep emitted values from now on (idempotent)."""
        if self._values is None:
            self._values = asyncio.Queue()

    def emit(self, value: T) -> None:
        if self._values is not None:
            self._values.put_nowait(value)

    async def next(self, timeout_s: float = GUARD_S) -> T:
        """The next value not taken yet: one kept already, or the next emitted."""
        values = self._armed()
        try:
            async with asyncio.timeout(timeout_s):
                return await values.get()
        except TimeoutError:
            raise TimeoutError(f"no {self._name} signal within {timeout_s:g} s") from None

    async def until(self, wanted: Callable[[T], bool], timeout_s: float = GUARD_S) -> T:
        """Take values until one is ``wanted``; return it."""
        values = self._armed()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    value = await values.get()
                    if wanted(value):
                        return value
        except TimeoutError:
            raise TimeoutError(f"no such {self._name} signal within {timeout_s:g} s") from None

    def taken(self) -> list[T]:
        """Take every value kept so far (none emitted meanwhile: no wait)."""
        values = self._armed()
        out: list[T] = []
        while not values.empty():
            out.append(values.get_nowait())
        return out

    def _armed(self) -> asyncio.Queue[T]:
        if self._values is None:
            raise RuntimeError(f"the {self._name} signal is not armed: call arm() first")
        return self._values


class Signals:
    """A loop's signals: every ``Signal`` attribute of the instance."""

    def arm(self) -> Self:
        """Arm every signal of this loop; returns itself (``Loop(..., signals=X().arm())``)."""
        for value in vars(self).values():
            if isinstance(value, Signal):
                value.arm()
        return self


class DiscoverySignals(Signals):
    def __init__(self) -> None:
        # A claim round ended (also one cut short by an error): how many tasks it took.
        self.claimed: Signal[int] = Signal("discovery.claimed")
        # Every slot is taken: it waits for one before it claims again.
        self.waiting_for_slots: Signal[None] = Signal("discovery.waiting_for_slots")
        # It (re)started waiting: the seconds until it looks again unless woken sooner.
        self.slept: Signal[float] = Signal("discovery.slept")


class CompleterSignals(Signals):
    def __init__(self) -> None:
        # A batch was written and reported: its task ids (applied or fenced out).
        self.recorded: Signal[list[uuid.UUID]] = Signal("completer.recorded")
        # A write failed and is retried after a back-off: the error.
        self.retrying: Signal[str] = Signal("completer.retrying")


class RescuerSignals(Signals):
    def __init__(self) -> None:
        # A sweep ended: how many tasks it rescued.
        self.swept: Signal[int] = Signal("rescuer.swept")


class ExpanderSignals(Signals):
    def __init__(self) -> None:
        # A round of passes ended: how many tasks it created.
        self.expanded: Signal[int] = Signal("expander.expanded")
        # It started waiting: the seconds until it looks again unless woken sooner.
        self.slept: Signal[float] = Signal("expander.slept")


class ConsumerSignals(Signals):
    def __init__(self) -> None:
        # A receive call answered: how many messages it brought.
        self.received: Signal[int] = Signal("consumer.received")
        # A poller's round ended, its reserved slots settled: how many the receive kept.
        self.polled: Signal[int] = Signal("consumer.polled")


class PublisherSignals(Signals):
    def __init__(self) -> None:
        # A pass picked rows and committed what the services took: how many rows it picked.
        self.published: Signal[int] = Signal("publisher.published")
        # The outbox is drained: it waits this long unless notified sooner.
        self.slept: Signal[float] = Signal("publisher.slept")
