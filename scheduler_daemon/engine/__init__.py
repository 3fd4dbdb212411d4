"""The daemon's long-lived loops, one per file, connected by in-process queues."""
