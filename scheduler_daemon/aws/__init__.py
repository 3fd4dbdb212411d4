"""The AWS adapter of the eventbridge backend: SQS and EventBridge Scheduler clients
(``clients``), the wake-up message and schedule formats (``codec``), the wake-up port of
``engine/wakeups.py`` on those services (``adapter``), and a development emulator of
Scheduler's firing (``emulator``). The loops that use them live in ``scheduler_daemon.engine``."""
