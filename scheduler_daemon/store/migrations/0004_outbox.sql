-- The outbox of the eventbridge backend. PostgreSQL stays the record of every task; a task's
-- wake-up (an SQS message, or an EventBridge Scheduler at() schedule) is published after the
-- row commits, so creating, cancelling or rescheduling a task only ever writes PostgreSQL
-- (inside the caller's own transaction when it uses enqueue()).
--
-- wake_version counts the times a task was scheduled anew (insert, retry, rescue, run now,
-- release from waiting); every message carries it, so a message of an earlier scheduling is
-- recognised as stale. published_version is the version AWS accepted; aws_schedule names the
-- at() schedule that may still exist for the task.
ALTER TABLE tasks
    ADD COLUMN wake_version      integer NOT NULL DEFAULT 1,
    ADD COLUMN published_version integer NOT NULL DEFAULT 0,
    ADD COLUMN published_at      timestamptz,
    ADD COLUMN aws_schedule      text;

-- A new scheduling of a task is a new version. Put back by a draining daemon (running ->
-- scheduled, run_at unchanged) is not: its message is made visible again and still counts.
CREATE FUNCTION scheduler_bump_wake_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.wake_version := OLD.wake_version + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER tasks_wake_version
    BEFORE UPDATE OF status, run_at ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'scheduled'
          AND (OLD.status NOT IN ('scheduled', 'running') OR NEW.run_at IS DISTINCT FROM OLD.run_at))
    EXECUTE FUNCTION scheduler_bump_wake_version();

-- What the publisher has to do: wake-ups not yet published, and schedules of tasks that no
-- longer need them (cancelled, finished, running). Earliest first.
CREATE INDEX tasks_outbox_idx ON tasks (run_at)
    WHERE (status = 'scheduled' AND published_version <> wake_version)
       OR (aws_schedule IS NOT NULL AND status <> 'scheduled');

-- Tasks deleted while their at() schedule may exist (a schedule's occurrences taken back,
-- dead letters discarded): the publisher deletes those schedules too.
CREATE TABLE eventbridge_deletions (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION scheduler_schedule_orphaned() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO eventbridge_deletions (name) VALUES (OLD.aws_schedule) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_schedule_orphaned
    AFTER DELETE ON tasks
    FOR EACH ROW
    WHEN (OLD.aws_schedule IS NOT NULL)
    EXECUTE FUNCTION scheduler_schedule_orphaned();
