"""structlog set-up: JSON lines in production, a readable console in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from scheduler_daemon.settings import LogSettings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(settings: LogSettings) -> None:
    fmt = settings.format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    level = _LEVELS[settings.level]
    global _level
    _level = level
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (asyncio, aiohttp) go to stderr too.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, force=True)


_level = logging.DEBUG  # as structlog before configure_logging: everything passes


def enabled(level: str) -> bool:
    """Whether lines of ``level`` are written (to skip building ones that would not be)."""
    return _LEVELS[level] >= _level


def get_logger(component: str, **bound: Any) -> Any:
    """A logger bound to ``component``; lazy, so module-level loggers follow configure_logging."""
    return structlog.get_logger(component=component, **bound)
