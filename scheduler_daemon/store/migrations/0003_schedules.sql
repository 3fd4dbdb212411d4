-- Schedules: recurrence templates that the expander turns into ordinary tasks.

CREATE TABLE schedules (
    id              uuid PRIMARY KEY,
    name            text        NOT NULL UNIQUE,
    rule            jsonb       NOT NULL,  -- cron | interval_s | preset (+ at, weekday, ...)
    timezone        text        NOT NULL DEFAULT 'UTC',
    template        jsonb       NOT NULL,  -- action, payload, queue, priority, ...
    start_at        timestamptz,
    end_at          timestamptz,
    exclusions      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    misfire_policy  text        NOT NULL DEFAULT 'run_once'
        CHECK (misfire_policy IN ('skip', 'run_once', 'run_all')),
    misfire_grace_s double precision NOT NULL DEFAULT 60 CHECK (misfire_grace_s >= 0),
    max_catchup     integer     NOT NULL DEFAULT 100 CHECK (max_catchup >= 1),
    overlap_policy  text        NOT NULL DEFAULT 'allow'
        CHECK (overlap_policy IN ('allow', 'skip', 'cancel_previous')),
    jitter_s        double precision NOT NULL DEFAULT 0 CHECK (jitter_s >= 0),
    paused          boolean     NOT NULL DEFAULT false,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The next occurrence not yet turned into a task (NULL: the rule has no more), when the
    -- expander should look at the schedule again, and the newest occurrence's task.
    next_run_at     timestamptz,
    expand_at       timestamptz,
    last_task_id    uuid,
    from_task       boolean     NOT NULL DEFAULT false,  -- made by a task's "recurrence"
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The expander's claim: active schedules whose time to expand has come.
CREATE INDEX schedules_expand_idx ON schedules (expand_at)
    WHERE NOT paused AND expand_at IS NOT NULL;
CREATE INDEX schedules_created_idx ON schedules (created_at DESC, id DESC);

-- A schedule's occurrences, newest first; and "is one still pending" for overlap policies.
CREATE INDEX tasks_schedule_idx ON tasks (schedule_id, scheduled_for DESC)
    WHERE schedule_id IS NOT NULL;

-- Wake the expanders when a schedule is created or changed by a user (updated_at moves); the
-- expander's own bookkeeping (next_run_at, expand_at) does not touch updated_at.
CREATE FUNCTION scheduler_notify_schedules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scheduler_schedules', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_notify_insert
    AFTER INSERT ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION scheduler_notify_schedules();

CREATE TRIGGER schedules_notify_update
    AFTER UPDATE ON schedules
    FOR EACH ROW
    WHEN (OLD.updated_at IS DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION scheduler_notify_schedules();
