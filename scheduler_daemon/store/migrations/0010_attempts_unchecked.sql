-- Attempt rows without a foreign key check. Every attempt is written by the statement that
-- moves its task on (the completion, the rescue), joined to the task row it just updated, so
-- the check proved again what that statement already holds, at about 30 us of PostgreSQL CPU
-- per recorded attempt: the largest single cost of a completion after the update itself.
-- What the key also did, removing a task's attempts with the task, a statement trigger does:
-- once per DELETE statement (the pruner's batches, discarded dead letters), not per row.
ALTER TABLE task_attempts DROP CONSTRAINT IF EXISTS task_attempts_task_id_fkey;

CREATE FUNCTION scheduler_delete_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_attempts a USING old_rows o WHERE a.task_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_delete_attempts
    AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scheduler_delete_attempts();
