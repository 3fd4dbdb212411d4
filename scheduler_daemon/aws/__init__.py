"""The AWS backend: outbox publisher (PostgreSQL -> SQS / EventBridge Scheduler) and the SQS
consumer."""
