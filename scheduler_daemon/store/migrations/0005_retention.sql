-- Retention: the pruner deletes finished tasks (their attempts cascade) once they are older
-- than retention.completed_days (completed, cancelled) or retention.failed_days (failed),
-- optionally copying them to the archive tables first.

-- The archive: the columns of tasks and task_attempts (and their defaults and NOT NULLs) plus
-- when the row was archived. No CHECK constraints, foreign keys or triggers: it is a sink
-- that accepts whatever the live tables held. The pruner names every column, so a migration
-- that adds a column to tasks or task_attempts adds it here too and to the pruner's column
-- list in queries.py (a test compares the three).
CREATE TABLE tasks_archive (
    LIKE tasks INCLUDING DEFAULTS,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_archive_id_idx ON tasks_archive (id);

CREATE TABLE task_attempts_archive (
    LIKE task_attempts INCLUDING DEFAULTS,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_attempts_archive_task_idx ON task_attempts_archive (task_id, number);

-- The pruner's scans, oldest first, one per retention window. Each finished task sits in
-- exactly one of them; running and waiting work is in neither. The failed one also serves
-- the dead-letter re-queue, which picks failed tasks by finished_at.
CREATE INDEX tasks_done_finished_idx ON tasks (finished_at)
    WHERE status IN ('completed', 'cancelled');
CREATE INDEX tasks_failed_finished_idx ON tasks (finished_at)
    WHERE status = 'failed';
