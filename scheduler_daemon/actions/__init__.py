"""Actions: what a task does when it runs. Each has a pydantic payload model."""
