"""scheduler-daemon: schedule work over HTTP and run it reliably.

The names exported here are what handler modules use::

    from scheduler_daemon import Fail, HandlerContext, Retry, handler
"""

from __future__ import annotations

from scheduler_daemon.actions.base import Fail, Retry
from scheduler_daemon.handlers import HandlerContext, handler

__all__ = ["Fail", "HandlerContext", "Retry", "handler"]
