-- Tasks and their attempts. Later migrations add schedules, dependencies and recurrence.

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    action           text        NOT NULL,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    queue            text        NOT NULL DEFAULT 'default',
    priority         integer     NOT NULL DEFAULT 0,
    status           text        NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('waiting', 'scheduled', 'running', 'completed', 'failed', 'cancelled')),
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_s        double precision NOT NULL DEFAULT 30 CHECK (timeout_s > 0),
    idempotency_key  text,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CHECK (status <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Claiming walks this partial index in claim order; finished rows are not in it, so it stays
-- small however many millions of completed tasks the table holds.
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at, id) WHERE status = 'scheduled';
-- The earliest future run_at (how long discovery may sleep).
CREATE INDEX tasks_next_run_idx ON tasks (run_at) WHERE status = 'scheduled';
-- Expired leases (the rescuer).
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'running';
-- Listing, newest first, with a keyset cursor; per status as well.
CREATE INDEX tasks_created_idx ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at DESC, id DESC);
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_attempts (
    task_id     uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number      integer     NOT NULL CHECK (number >= 1),
    worker      text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'lost')),
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    duration_ms double precision,
    error       text,
    output      text,
    PRIMARY KEY (task_id, number)
);

-- Wake discovery when due work appears, whoever wrote it. Inserts notify once per statement
-- with the delay until the earliest new task; updates notify when a row becomes scheduled
-- (a retry, a rescue, a release) or moves earlier. Tasks due more than 60 s ahead are not
-- announced: discovery looks again within discovery.poll_interval_s (at most 60 s) anyway,
-- and a NOTIFY serialises commits (no group commit), which would cap the insert rate.
CREATE FUNCTION scheduler_notify_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    next_at timestamptz;
BEGIN
    SELECT min(run_at) INTO next_at FROM new_rows WHERE status = 'scheduled';
    IF next_at IS NOT NULL AND next_at <= clock_timestamp() + interval '60 seconds' THEN
        PERFORM pg_notify('scheduler_tasks',
                          extract(epoch FROM next_at - clock_timestamp())::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION scheduler_notify_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scheduler_tasks',
                      extract(epoch FROM NEW.run_at - clock_timestamp())::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_insert
    AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scheduler_notify_inserted();

CREATE TRIGGER tasks_notify_update
    AFTER UPDATE OF status, run_at ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'scheduled'
          AND (OLD.status IS DISTINCT FROM 'scheduled' OR NEW.run_at < OLD.run_at))
    EXECUTE FUNCTION scheduler_notify_updated();
