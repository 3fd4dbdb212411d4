"""scheduler-daemon: schedule work over HTTP and run it reliably.

The names exported here are what handler modules and services use::

    from scheduler_daemon import Fail, HandlerContext, Retry, handler
    from scheduler_daemon import enqueue  # inside the service's own transaction
"""

from __future__ import annotations

from scheduler_daemon.actions.base import Fail, Retry
from scheduler_daemon.enqueue import enqueue, enqueue_many
from scheduler_daemon.handlers import HandlerContext, handler

__all__ = ["Fail", "HandlerContext", "Retry", "enqueue", "enqueue_many", "handler"]
