-- Dependencies, idempotent requests, attempt series, and the columns schedules will fill.

ALTER TABLE tasks
    ADD COLUMN request_hash   text,
    ADD COLUMN depends_on     uuid[]  NOT NULL DEFAULT '{}',
    ADD COLUMN has_dependents boolean NOT NULL DEFAULT false,
    ADD COLUMN series_start   integer NOT NULL DEFAULT 0 CHECK (series_start >= 0),
    ADD COLUMN schedule_id    uuid,
    ADD COLUMN scheduled_for  timestamptz,
    ADD COLUMN parent_task_id uuid;

-- One task per schedule occurrence.
CREATE UNIQUE INDEX tasks_schedule_occurrence_idx ON tasks (schedule_id, scheduled_for)
    WHERE schedule_id IS NOT NULL;
-- Keyset listing per queue and per action stays an index scan with millions of rows.
CREATE INDEX tasks_queue_created_idx ON tasks (queue, created_at DESC, id DESC);
CREATE INDEX tasks_action_created_idx ON tasks (action, created_at DESC, id DESC);

-- Who waits for whom: a task runs once every task it depends on completed.
CREATE TABLE task_dependencies (
    task_id       uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (depends_on_id, task_id)
);
CREATE INDEX task_dependencies_task_idx ON task_dependencies (task_id);

-- When a task with dependents finishes: a completion releases every dependent whose other
-- dependencies completed too; a failure or cancellation cancels the waiting dependents (and,
-- through this same trigger, theirs). Dependents are locked first, so two dependencies that
-- complete at the same time cannot both miss the other's completion.
CREATE FUNCTION scheduler_resolve_dependents() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM tasks t
    WHERE t.id IN (SELECT d.task_id FROM task_dependencies d WHERE d.depends_on_id = NEW.id)
      AND t.status = 'waiting'
    ORDER BY t.id
    FOR UPDATE;

    IF NEW.status = 'completed' THEN
        UPDATE tasks t
        SET status = 'scheduled', run_at = greatest(t.run_at, now()), updated_at = now()
        WHERE t.id IN (SELECT d.task_id FROM task_dependencies d WHERE d.depends_on_id = NEW.id)
          AND t.status = 'waiting'
          AND NOT EXISTS (
              SELECT 1 FROM task_dependencies d2 JOIN tasks dep ON dep.id = d2.depends_on_id
              WHERE d2.task_id = t.id AND dep.status <> 'completed');
    ELSE
        UPDATE tasks t
        SET status = 'cancelled', finished_at = now(), updated_at = now(),
            last_error = format('dependency %s %s', NEW.id, NEW.status)
        WHERE t.id IN (SELECT d.task_id FROM task_dependencies d WHERE d.depends_on_id = NEW.id)
          AND t.status = 'waiting';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_resolve_dependents
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (NEW.has_dependents
          AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION scheduler_resolve_dependents();
