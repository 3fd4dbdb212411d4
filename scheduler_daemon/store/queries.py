"""Every SQL statement the daemon runs, by name. Parameters are asyncpg ``$n``."""

from __future__ import annotations

# Task notifications: a delay in seconds until a task is due, or "queues" (pause/resume).
NOTIFY_CHANNEL = "scheduler_tasks"

TASK_COLUMNS = """id, action, payload, queue, priority, status, run_at, attempts, max_attempts,
    timeout_s, idempotency_key, metadata, lease_owner, lease_expires_at, last_error, result,
    created_at, updated_at, started_at, finished_at, depends_on, schedule_id, scheduled_for,
    parent_task_id, request_hash, retry_base_s, retry_cap_s"""

# The same columns with the jsonb ones read as JSON text, for the statements that also run on
# a caller's own connection (transactional enqueue): whether or not that connection has the
# pool's jsonb codec, text reads the same, and the store decodes it.
_JSON_COLUMNS = frozenset({"payload", "metadata", "result"})
TASK_COLUMNS_JSON_TEXT = ", ".join(
    f"{c}::text AS {c}" if c in _JSON_COLUMNS else c
    for c in (c.strip() for c in TASK_COLUMNS.split(","))
)

# Insert many tasks in one statement (a single create is a batch of one). A repeated
# idempotency key inserts nothing; the caller compares the stored request fingerprint.
# payload and metadata arrive as JSON text (no codec needed), so the statement runs the same
# on a pool connection and on a service's own connection; it returns only what the database
# decided (the rest of each row is what was sent).
_INSERT_TASKS = """
INSERT INTO tasks (id, action, payload, queue, priority, status, run_at, max_attempts,
                   timeout_s, idempotency_key, request_hash, metadata, depends_on, last_error,
                   finished_at, schedule_id, scheduled_for, parent_task_id, retry_base_s,
                   retry_cap_s)
SELECT r.id, r.action, r.payload::jsonb, r.queue, r.priority, r.status,
       COALESCE(r.run_at, now() + make_interval(secs => COALESCE(r.delay_s, 0))),
       r.max_attempts, r.timeout_s, r.idempotency_key, r.request_hash,
       COALESCE(r.metadata::jsonb, '{}'),
       COALESCE(r.depends_on::uuid[], '{}'), r.last_error,
       CASE WHEN r.status = 'cancelled' THEN now() END,
       r.schedule_id, r.scheduled_for, r.parent_task_id, r.retry_base_s, r.retry_cap_s
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
            $7::timestamptz[], $8::float8[], $9::int[], $10::float8[], $11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::uuid[], $17::timestamptz[],
            $18::uuid[], $19::float8[], $20::float8[])
     AS r(id, action, payload, queue, priority, status, run_at, delay_s, max_attempts,
          timeout_s, idempotency_key, request_hash, metadata, depends_on, last_error,
          schedule_id, scheduled_for, parent_task_id, retry_base_s, retry_cap_s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
"""
INSERT_TASKS = f"""{_INSERT_TASKS}
RETURNING id, status, run_at, created_at, updated_at, finished_at, last_error
"""
# Tasks without idempotency keys or dependencies, nothing read back (enqueue_many).
INSERT_TASKS_QUIET = _INSERT_TASKS

# The same for one task, with plain parameters: encoding eighteen one-element arrays costs
# more than the insert itself on the single-create path.
INSERT_TASK = """
INSERT INTO tasks (id, action, payload, queue, priority, status, run_at, max_attempts,
                   timeout_s, idempotency_key, request_hash, metadata, depends_on, last_error,
                   finished_at, schedule_id, scheduled_for, parent_task_id, retry_base_s,
                   retry_cap_s)
VALUES ($1, $2, $3::text::jsonb, $4, $5, $6,
        COALESCE($7, now() + make_interval(secs => COALESCE($8::float8, 0))),
        $9, $10, $11, $12, COALESCE($13::text::jsonb, '{}'), COALESCE($14::text::uuid[], '{}'), $15,
        CASE WHEN $6 = 'cancelled' THEN now() END, $16, $17, $18, $19, $20)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, status, run_at, created_at, updated_at, finished_at, last_error
"""

GET_TASKS_BY_IDEMPOTENCY_KEYS = f"""
SELECT {TASK_COLUMNS_JSON_TEXT} FROM tasks WHERE idempotency_key = ANY($1::text[])
"""

# Mark the dependencies of new tasks (locking them until the new tasks commit, so none can
# finish unnoticed in between) and report their status; unknown ids are simply missing.
LOCK_DEPENDENCIES = """
UPDATE tasks SET has_dependents = true
WHERE id = ANY($1::uuid[])
RETURNING id, status
"""

INSERT_DEPENDENCIES = """
INSERT INTO task_dependencies (task_id, depends_on_id)
SELECT * FROM unnest($1::uuid[], $2::uuid[])
ON CONFLICT DO NOTHING
"""

GET_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"


LIST_ATTEMPTS = """
SELECT task_id, number, worker, outcome, started_at, finished_at, duration_ms, error, output
FROM task_attempts WHERE task_id = $1 ORDER BY number
"""

# Run a scheduled task now (its run_at moves to now; the update trigger wakes discovery).
RUN_NOW = f"""
UPDATE tasks SET run_at = now(), updated_at = now()
WHERE id = $1 AND status = 'scheduled'
RETURNING {TASK_COLUMNS}
"""

# Re-queue a failed or cancelled task as a new attempt series: max_attempts counts afresh.
RETRY_TASK = f"""
UPDATE tasks
SET status = 'scheduled', run_at = now(), series_start = attempts, last_error = NULL,
    finished_at = NULL, updated_at = now()
WHERE id = $1 AND status IN ('failed', 'cancelled')
RETURNING {TASK_COLUMNS}
"""

CANCEL_TASK = f"""
UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now()
WHERE id = $1 AND status IN ('waiting', 'scheduled')
RETURNING {TASK_COLUMNS}
"""

# Claim up to $1 due tasks for owner $2 with a lease of $3 seconds. Rows other claimers hold
# are skipped, never waited for.
# A paused queue's tasks are never claimed, whichever daemon paused it.
NOT_PAUSED = "NOT EXISTS (SELECT FROM queue_pauses p WHERE p.queue = {queue})"

# A daemon claims only the actions it can run (its handlers and the built-ins it is configured
# for), given as a text[] parameter; NULL: every action (a store that is not a daemon's).
RUNNABLE = "({param}::text[] IS NULL OR {action} = ANY({param}::text[]))"

# Taking claimed rows: running under owner $2 with a lease of $3 seconds.
# The rows are looked up by primary key (`= ANY` of the chosen ids): joined to `due` instead,
# a freshly analysed table of a few thousand rows was planned as a hash join over a sequential
# scan of the whole table, on every claim.
_TAKE = """
UPDATE tasks t
SET status = 'running', attempts = t.attempts + 1, lease_owner = $2,
    lease_expires_at = now() + make_interval(secs => $3),
    started_at = now(), updated_at = now()
WHERE t.id = ANY(ARRAY(SELECT id FROM due)){also}
RETURNING t.id, t.action, t.payload, t.priority, t.attempts, t.max_attempts, t.timeout_s,
          t.run_at, t.series_start, t.queue, now() AS claimed_at, t.retry_base_s, t.retry_cap_s
"""

#
# Discovery runs this claim only while it knows of no paused queue (else it claims queue by
# queue), so the pause is checked on the rows taken, not while choosing them: any condition on
# the queue column in `due` is estimated from the column's statistics, and with one queue a
# paused-queue test is estimated to keep no row at all, so the planner sorted the whole backlog
# on every claim instead of reading the claim index in order (17 ms per claim of 100 out of
# 20,000 due). A queue paused a moment ago leaves its rows locked in `due` and untaken.
CLAIM = f"""
WITH due AS (
    SELECT id FROM tasks
    WHERE status = 'scheduled' AND run_at <= now()
      AND {RUNNABLE.format(param="$4", action="tasks.action")}
    ORDER BY priority DESC, run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
{_TAKE.format(also=" AND " + NOT_PAUSED.format(queue="t.queue"))}"""

# The queues that have scheduled tasks, by a loose index scan of tasks_queue_claim_idx: one
# probe per queue however many rows each holds (the ORDER BY is that index's key, so no other
# index can serve it). Used while some queues are left out of claims (paused or at a limit):
# the other queues are then claimed one by one, so that no claim reads through the backlog of
# a queue it may not take from.
SCHEDULED_QUEUES = """
WITH RECURSIVE queues AS (
    (SELECT queue FROM tasks WHERE status = 'scheduled'
     ORDER BY queue, priority DESC, run_at, id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.queue FROM tasks t
            WHERE t.status = 'scheduled' AND t.queue > q.queue
            ORDER BY t.queue, t.priority DESC, t.run_at, t.id LIMIT 1)
    FROM queues q WHERE q.queue IS NOT NULL
)
SELECT queue FROM queues WHERE queue IS NOT NULL
"""

# Statements about one queue: planned for that queue (not with a generic plan), and never by
# sorting what an index on the queue gives in order. A queue's row count changes faster than
# its statistics: planned on an estimate of one row, a claim would sort the queue's whole
# backlog at every call. With sorting off, tasks_queue_claim_idx is the cheapest way to the
# queue's first rows in claim order, whatever the estimate.
PER_QUEUE_PLANNING = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_sort = off"

# Serialises the claims of one queue that has a global concurrency limit, across daemons, for
# the rest of the transaction.
LOCK_QUEUE = "SELECT pg_advisory_xact_lock(hashtextextended('scheduler_daemon.queue:' || $1, 0))"

# Up to $1 due tasks of queue $4; with a global limit $5, no more than $5 running in the queue
# across all daemons. A running task whose lease has expired does not count: its daemon is
# gone, and the rescuer puts it back.
_QUEUE_ROOM = """CASE WHEN $5::int IS NULL THEN $1 ELSE greatest(least($1, $5 - (
            SELECT count(*) FROM tasks r
            WHERE r.status = 'running' AND r.queue = $4 AND r.lease_expires_at > now())), 0)
        END"""

CLAIM_QUEUE = f"""
WITH due AS (
    SELECT id FROM tasks
    WHERE status = 'scheduled' AND queue = $4 AND run_at <= now()
      AND {NOT_PAUSED.format(queue="$4")} AND {RUNNABLE.format(param="$6", action="action")}
    ORDER BY priority DESC, run_at, id
    LIMIT {_QUEUE_ROOM}
    FOR UPDATE SKIP LOCKED
)
{_TAKE.format(also="")}"""

# Seconds from the database's now() to the earliest scheduled task of the actions $1 (see
# RUNNABLE; negative: already due).
NEXT_DUE_IN = f"""
SELECT extract(epoch FROM min(run_at) - now())::float8 FROM tasks
WHERE status = 'scheduled' AND {RUNNABLE.format(param="$1", action="action")}
"""

# The earliest run_at of one queue ($1) among the actions $2, paused or not.
QUEUE_NEXT_RUN = f"""
SELECT min(run_at) FROM tasks
WHERE status = 'scheduled' AND queue = $1 AND {RUNNABLE.format(param="$2", action="action")}
"""

SECONDS_UNTIL = "SELECT extract(epoch FROM $1::timestamptz - now())::float8"

# Scheduled tasks that are due and not claimed (the scheduler_tasks_due gauge).
COUNT_DUE = """
SELECT count(*) FROM tasks WHERE status = 'scheduled' AND run_at <= now()
"""

# The dashboard's counts (GET /v1/stats), one snapshot on the database's clock: tasks per
# (status, queue) as three parallel arrays, the due ones (tasks_next_run_idx) and the ones
# failed in the last hour (tasks_failed_finished_idx). The GROUP BY reads the whole table, a
# parallel sequential scan, so it grows with the table: measured about 40 ms with 200,000
# tasks and 350 ms with 2,000,000 (PostgreSQL 18, table cached); retention bounds it.
COUNT_TASKS = """
WITH groups AS (
    SELECT status, queue, count(*) AS n FROM tasks GROUP BY status, queue
)
SELECT now() AS db_now,
       (SELECT count(*) FROM tasks WHERE status = 'scheduled' AND run_at <= now()) AS due_now,
       (SELECT count(*) FROM tasks
        WHERE status = 'failed' AND finished_at >= now() - interval '1 hour') AS failed_last_hour,
       ARRAY(SELECT status FROM groups ORDER BY status, queue) AS statuses,
       ARRAY(SELECT queue FROM groups ORDER BY status, queue) AS queues,
       ARRAY(SELECT n FROM groups ORDER BY status, queue) AS counts
"""

# The statements about leases this daemon holds (complete, renew, release) find their rows by
# primary key (`id = ANY`), however many other tasks are running, and check on each row that it
# is still running under this owner for that attempt (the fence). The status test is written so
# that no index can serve it: statistics from a quiet time say no task runs, and with a plain
# `status = 'running'` the planner read every running task through the lease index instead.
RUNNING_ROW = "coalesce(t.status, '') = 'running'"

# Apply a batch of attempt results in one statement: the task row moves on only while this
# owner still holds the lease for that attempt (fencing), and only such attempts are recorded.
COMPLETE = f"""
WITH r AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::float8[],
                         $7::text[], $8::text[], $9::jsonb[], $10::float8[])
        AS r(id, attempt, outcome, next_status, retry_in_s, error, output, result, duration_ms)
), done AS (
    UPDATE tasks t
    SET status = r.next_status,
        run_at = CASE WHEN r.next_status = 'scheduled'
                      THEN now() + make_interval(secs => r.retry_in_s) ELSE t.run_at END,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = CASE WHEN r.outcome = 'succeeded' THEN NULL ELSE r.error END,
        result = CASE WHEN r.outcome = 'succeeded' THEN r.result ELSE t.result END,
        finished_at = CASE WHEN r.next_status IN ('completed', 'failed') THEN now() END,
        updated_at = now()
    FROM r
    WHERE t.id = ANY($2::uuid[]) AND t.id = r.id AND t.attempts = r.attempt
      AND {RUNNING_ROW} AND t.lease_owner = $1
    RETURNING t.id, t.started_at
)
INSERT INTO task_attempts (task_id, number, worker, outcome, started_at, finished_at,
                           duration_ms, error, output)
SELECT r.id, r.attempt, $1, r.outcome, done.started_at, now(), r.duration_ms, r.error, r.output
FROM done JOIN r ON r.id = done.id
ON CONFLICT (task_id, number) DO NOTHING
RETURNING task_id
"""

# Renew the leases of every in-flight task of owner $1 at once; returns those still held.
RENEW_LEASES = f"""
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => $2)
FROM unnest($3::uuid[], $4::int[]) AS h(id, attempt)
WHERE t.id = ANY($3::uuid[]) AND t.id = h.id AND t.attempts = h.attempt
  AND {RUNNING_ROW} AND t.lease_owner = $1
RETURNING t.id, t.attempts
"""

# Put tasks back that this owner claimed but did not finish (shutdown): the interrupted
# attempt is not counted.
RELEASE = f"""
UPDATE tasks t
SET status = 'scheduled', attempts = t.attempts - 1, lease_owner = NULL,
    lease_expires_at = NULL, updated_at = now()
FROM unnest($2::uuid[], $3::int[]) AS h(id, attempt)
WHERE t.id = ANY($2::uuid[]) AND t.id = h.id AND t.attempts = h.attempt
  AND {RUNNING_ROW} AND t.lease_owner = $1
RETURNING t.id
"""

# Running tasks whose lease expired (their daemon died or stalled) go back to scheduled, or to
# failed when their attempts are used up; the lost attempt is recorded.
RESCUE_EXPIRED = """
WITH expired AS (
    SELECT id, lease_owner FROM tasks
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE tasks t
    SET status = CASE WHEN t.attempts - t.series_start >= t.max_attempts
                      THEN 'failed' ELSE 'scheduled' END,
        run_at = CASE WHEN t.attempts - t.series_start >= t.max_attempts
                      THEN t.run_at ELSE now() END,
        finished_at = CASE WHEN t.attempts - t.series_start >= t.max_attempts THEN now() END,
        last_error = 'lease expired: worker ' || e.lease_owner || ' stopped renewing it',
        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    FROM expired e
    WHERE t.id = e.id
    RETURNING t.id, t.status, t.attempts, t.started_at, t.action, t.queue,
              e.lease_owner AS owner
), recorded AS (
    INSERT INTO task_attempts (task_id, number, worker, outcome, started_at, finished_at, error)
    SELECT m.id, m.attempts, m.owner, 'lost', COALESCE(m.started_at, now()), now(),
           'lease expired'
    FROM moved m WHERE m.attempts >= 1
    ON CONFLICT (task_id, number) DO NOTHING
)
SELECT id, status, attempts, owner, action, queue FROM moved
"""

PING = "SELECT 1"

# -- schedules ----------------------------------------------------------------------------

SCHEDULE_COLUMNS = """id, name, rule, timezone, template, start_at, end_at, exclusions,
    misfire_policy, misfire_grace_s, max_catchup, overlap_policy, jitter_s, paused, metadata,
    next_run_at, expand_at, last_task_id, from_task, created_at, updated_at"""

INSERT_SCHEDULE = f"""
INSERT INTO schedules (id, name, rule, timezone, template, start_at, end_at, exclusions,
                       misfire_policy, misfire_grace_s, max_catchup, overlap_policy, jitter_s,
                       paused, metadata, next_run_at, expand_at, last_task_id, from_task)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
RETURNING {SCHEDULE_COLUMNS}
"""

UPDATE_SCHEDULE = f"""
UPDATE schedules
SET name = $2, rule = $3, timezone = $4, template = $5, start_at = $6, end_at = $7,
    exclusions = $8, misfire_policy = $9, misfire_grace_s = $10, max_catchup = $11,
    overlap_policy = $12, jitter_s = $13, paused = $14, metadata = $15, next_run_at = $16,
    expand_at = $17, updated_at = now()
WHERE id = $1
RETURNING {SCHEDULE_COLUMNS}
"""

GET_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1"
GET_SCHEDULE_FOR_UPDATE = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 FOR UPDATE"

# Pausing stops new occurrences; resuming lets the expander look at once (the misfire policy
# decides what happens to occurrences missed meanwhile).
SET_PAUSED = f"""
UPDATE schedules
SET paused = $2, updated_at = now(),
    expand_at = CASE WHEN $2 THEN expand_at ELSE least(expand_at, now()) END
WHERE id = $1
RETURNING {SCHEDULE_COLUMNS}
"""

# Occurrences that have not started are cancelled with their schedule.
CANCEL_SCHEDULE_TASKS = """
UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now(),
    last_error = 'schedule deleted'
WHERE schedule_id = $1 AND status IN ('waiting', 'scheduled')
"""

DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = $1 RETURNING id"

# The expander's claim: active schedules due for expansion, locked (other expanders skip
# them), with whether an earlier occurrence is still pending (for the overlap policies) and
# the database's now.
CLAIM_SCHEDULES = f"""
SELECT {SCHEDULE_COLUMNS}, now() AS db_now,
       CASE WHEN s.overlap_policy <> 'allow' THEN EXISTS (
           SELECT 1 FROM tasks t
           WHERE t.schedule_id = s.id AND t.status IN ('waiting', 'scheduled', 'running'))
       ELSE false END AS busy
FROM schedules s
WHERE NOT s.paused AND s.expand_at <= now()
ORDER BY s.expand_at
LIMIT $1
FOR UPDATE OF s SKIP LOCKED
"""

CANCEL_PENDING_OCCURRENCES = """
UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now(),
    last_error = 'cancelled by a newer occurrence (overlap policy cancel_previous)'
WHERE schedule_id = ANY($1::uuid[]) AND status = 'scheduled'
"""

# Occurrences, each at most once: the (schedule_id, scheduled_for) key drops a repeat.
INSERT_OCCURRENCES = INSERT_TASKS.replace(
    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
    "ON CONFLICT DO NOTHING",
)

ADVANCE_SCHEDULES = """
UPDATE schedules s
SET next_run_at = a.next_run_at, expand_at = a.expand_at, last_task_id = a.last_task_id
FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::uuid[])
     AS a(id, next_run_at, expand_at, last_task_id)
WHERE s.id = a.id
"""

# Seconds until the next schedule is due for expansion (negative: already).
NEXT_EXPANSION_IN = """
SELECT extract(epoch FROM min(expand_at) - now())::float8 FROM schedules
WHERE NOT paused AND expand_at IS NOT NULL
"""

# Occurrences made ahead that have not started are taken back (pause, rule change): they
# have not happened yet, and the expander makes them again from next_run_at.
TAKE_BACK_OCCURRENCES = """
DELETE FROM tasks
WHERE schedule_id = $1 AND status = 'scheduled' AND attempts = 0 AND scheduled_for > now()
RETURNING scheduled_for
"""

REWIND_SCHEDULE = """
UPDATE schedules SET next_run_at = least(next_run_at, $2), last_task_id = (
    SELECT id FROM tasks WHERE schedule_id = $1 ORDER BY scheduled_for DESC LIMIT 1)
WHERE id = $1
"""

# -- dead letters (failed tasks) ------------------------------------------------------------

# Re-queue failed tasks as a new attempt series: by ids, or by action/queue (NULL: any).
RETRY_DEAD_LETTERS = """
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = 'failed'
      AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))
      AND ($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR queue = $3)
    ORDER BY finished_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET status = 'scheduled', run_at = now(), series_start = t.attempts, last_error = NULL,
    finished_at = NULL, updated_at = now()
FROM picked WHERE t.id = picked.id
RETURNING t.id
"""

DISCARD_DEAD_LETTERS = """
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = 'failed'
      AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))
      AND ($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR queue = $3)
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
DELETE FROM tasks t USING picked WHERE t.id = picked.id
RETURNING t.id
"""

# -- the eventbridge backend: outbox and SQS messages -----------------------------------------

# Outbox rows for one publisher pass, earliest first, locked until the pass commits (other
# daemons' publishers skip them). due_in_s is measured on the database's clock.
PICK_OUTBOX = """
SELECT id, status, run_at, extract(epoch FROM run_at - now())::float8 AS due_in_s,
       wake_version, published_version, aws_schedule
FROM tasks
WHERE (status = 'scheduled' AND published_version <> wake_version)
   OR (aws_schedule IS NOT NULL AND status <> 'scheduled')
ORDER BY run_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# What AWS accepted: the version now published (NULL: unchanged) and the schedule that exists
# for the task (NULL: none).
MARK_PUBLISHED = """
UPDATE tasks t
SET published_version = COALESCE(p.version, t.published_version),
    published_at = CASE WHEN p.version IS NULL THEN t.published_at ELSE now() END,
    aws_schedule = p.schedule
FROM unnest($1::uuid[], $2::int[], $3::text[]) AS p(id, version, schedule)
WHERE t.id = p.id
"""

COUNT_OUTBOX = """
SELECT count(*) FROM tasks
WHERE (status = 'scheduled' AND published_version <> wake_version)
   OR (aws_schedule IS NOT NULL AND status <> 'scheduled')
"""

# Due tasks whose published message never led to a claim (lost to a dead-letter queue, or a
# schedule deleted by hand): published again. Bounded per pass.
REPUBLISH_STALE = """
WITH stale AS (
    SELECT id FROM tasks
    WHERE status = 'scheduled' AND published_version = wake_version
      AND run_at < now() - make_interval(secs => $1)
      AND published_at < now() - make_interval(secs => $1)
    ORDER BY run_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t SET published_version = 0 FROM stale WHERE t.id = stale.id
RETURNING t.id
"""

# A wake-up the consumer held back (its queue paused or at a limit) is alive: it comes back
# by itself, so REPUBLISH_STALE leaves its task alone for another period.
WAKEUPS_DEFERRED = """
UPDATE tasks SET published_at = now() WHERE id = ANY($1::uuid[]) AND status = 'scheduled'
"""

PICK_SCHEDULE_DELETIONS = """
SELECT name FROM eventbridge_deletions ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""

DELETE_SCHEDULE_DELETIONS = """
DELETE FROM eventbridge_deletions WHERE name = ANY($1::text[])
"""

# Claim the tasks of received messages: only a task still scheduled under the message's
# version and due. The claim waits for a row lock rather than skipping it (a publisher may
# hold it for an instant).
CLAIM_MESSAGES = f"""
WITH m AS (
    SELECT * FROM unnest($1::uuid[], $2::int[]) AS m(id, version)
)
UPDATE tasks t
SET status = 'running', attempts = t.attempts + 1, lease_owner = $3,
    lease_expires_at = now() + make_interval(secs => $4),
    started_at = now(), updated_at = now()
FROM m
WHERE t.id = m.id AND t.status = 'scheduled' AND t.wake_version = m.version
  AND t.run_at <= now() AND t.queue <> ALL($5::text[])
  AND {NOT_PAUSED.format(queue="t.queue")} AND {RUNNABLE.format(param="$6", action="t.action")}
RETURNING t.id, t.action, t.payload, t.priority, t.attempts, t.max_attempts, t.timeout_s,
          t.run_at, t.series_start, t.queue, now() AS claimed_at, t.retry_base_s, t.retry_cap_s
"""

# Why the other messages' tasks were not claimed.
MESSAGE_TASKS = f"""
SELECT id, status, wake_version, extract(epoch FROM run_at - now())::float8 AS due_in_s,
       queue, action, NOT {NOT_PAUSED.format(queue="tasks.queue")} AS paused
FROM tasks WHERE id = ANY($1::uuid[])
"""

# Wake-ups of queue $4 (ids $6, series $7) that a queue limit lets through: CLAIM_QUEUE for
# the SQS consumer.
CLAIM_QUEUE_MESSAGES = f"""
WITH m AS (
    SELECT * FROM unnest($6::uuid[], $7::int[]) AS m(id, version)
), due AS (
    SELECT t.id FROM tasks t JOIN m ON m.id = t.id AND m.version = t.wake_version
    WHERE t.status = 'scheduled' AND t.queue = $4 AND t.run_at <= now()
      AND {NOT_PAUSED.format(queue="$4")} AND {RUNNABLE.format(param="$8", action="t.action")}
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT {_QUEUE_ROOM}
    FOR UPDATE OF t SKIP LOCKED
)
{_TAKE.format(also="")}"""

# -- retention: pruning finished tasks ------------------------------------------------------

# Every column of tasks and of task_attempts, named, for copying rows to the archive tables
# (which add archived_at). A migration that adds a column to either table adds it to the
# archive table and here too; tests/integration/test_retention.py compares them.
ARCHIVE_TASK_COLUMNS = """id, action, payload, queue, priority, status, run_at, attempts,
    max_attempts, timeout_s, idempotency_key, metadata, lease_owner, lease_expires_at,
    last_error, result, created_at, updated_at, started_at, finished_at, request_hash,
    depends_on, has_dependents, series_start, schedule_id, scheduled_for, parent_task_id,
    wake_version, published_version, published_at, aws_schedule, retry_base_s, retry_cap_s"""

ARCHIVE_ATTEMPT_COLUMNS = """task_id, number, worker, outcome, started_at, finished_at,
    duration_ms, error, output"""

# Up to $3 finished tasks past their retention window, oldest first: completed and cancelled
# ones finished more than $1 seconds ago, failed ones more than $2 seconds ago. Each window
# walks its own partial index (tasks_done_finished_idx, tasks_failed_finished_idx); rows other
# transactions hold are skipped, never waited for. A task that a waiting task still depends
# on is kept (it is deleted once its dependents have moved on).
_PRUNE_PICK = """
WITH done AS (
    SELECT t.id, t.finished_at FROM tasks t
    WHERE t.status IN ('completed', 'cancelled')
      AND t.finished_at < now() - make_interval(secs => $1::float8)
      AND NOT (t.has_dependents AND EXISTS (
          SELECT 1 FROM task_dependencies d JOIN tasks w ON w.id = d.task_id
          WHERE d.depends_on_id = t.id AND w.status = 'waiting'))
    ORDER BY t.finished_at
    LIMIT $3
    FOR UPDATE OF t SKIP LOCKED
), dead AS (
    SELECT t.id, t.finished_at FROM tasks t
    WHERE t.status = 'failed'
      AND t.finished_at < now() - make_interval(secs => $2::float8)
      AND NOT (t.has_dependents AND EXISTS (
          SELECT 1 FROM task_dependencies d JOIN tasks w ON w.id = d.task_id
          WHERE d.depends_on_id = t.id AND w.status = 'waiting'))
    ORDER BY t.finished_at
    LIMIT $3
    FOR UPDATE OF t SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT * FROM done UNION ALL SELECT * FROM dead) p
    ORDER BY finished_at
    LIMIT $3
), removed AS (
    DELETE FROM tasks t USING picked WHERE t.id = picked.id
    RETURNING t.*
)"""

# Delete one batch (attempts go with their tasks through the tasks_delete_attempts trigger,
# dependency rows cascade, the tasks_schedule_orphaned trigger queues any at() schedule left
# behind); returns how many tasks were deleted.
PRUNE_TASKS = (
    _PRUNE_PICK
    + """
SELECT count(*) FROM removed
"""
)

# The same, copying the tasks and their attempts to the archive tables in the same statement.
# Every part of one statement sees the same snapshot, so the attempts are read before the
# trigger at the statement's end removes them.
PRUNE_TASKS_ARCHIVE = (
    _PRUNE_PICK
    + f""", archived AS (
    INSERT INTO tasks_archive ({ARCHIVE_TASK_COLUMNS})
    SELECT {ARCHIVE_TASK_COLUMNS} FROM removed
), archived_attempts AS (
    INSERT INTO task_attempts_archive ({ARCHIVE_ATTEMPT_COLUMNS})
    SELECT {ARCHIVE_ATTEMPT_COLUMNS} FROM task_attempts
    WHERE task_id IN (SELECT id FROM removed)
)
SELECT count(*) FROM removed
"""
)

# -- queues -------------------------------------------------------------------------------

PAUSED_QUEUES = "SELECT queue FROM queue_pauses"

# Pausing and resuming tell every daemon's discovery at once (NOTIFY is sent at commit).
PAUSE_QUEUE = f"""
WITH paused AS (
    INSERT INTO queue_pauses (queue, paused_by) VALUES ($1, $2)
    ON CONFLICT (queue) DO NOTHING
    RETURNING queue
)
SELECT (SELECT count(*) FROM paused) > 0 AS changed, pg_notify('{NOTIFY_CHANNEL}', 'queues')
"""

RESUME_QUEUE = f"""
WITH resumed AS (
    DELETE FROM queue_pauses WHERE queue = $1 RETURNING queue
)
SELECT (SELECT count(*) FROM resumed) > 0 AS changed, pg_notify('{NOTIFY_CHANNEL}', 'queues')
"""

# Depth (scheduled), due, running and the oldest due task's age per queue: every queue with
# scheduled or running tasks, every paused queue, and the names in $1 (configured limits).
# $2: one queue only (NULL: all). Also the due tasks (and their actions) that no daemon seen
# within $3 seconds can run.
QUEUE_STATS = """
WITH live AS (
    SELECT ARRAY(SELECT DISTINCT unnest(actions) FROM workers
                 WHERE seen_at > now() - make_interval(secs => $3::float8)) AS actions
), s AS (
    SELECT queue, count(*) AS depth, count(*) FILTER (WHERE run_at <= now()) AS due,
           extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8
               AS oldest_due_age_s
    FROM tasks WHERE status = 'scheduled' AND ($2::text IS NULL OR queue = $2)
    GROUP BY queue
), w AS (
    SELECT queue, count(*) AS due_without_worker,
           array_agg(DISTINCT action) AS actions_without_worker
    FROM tasks, live
    WHERE status = 'scheduled' AND run_at <= now() AND action <> ALL(live.actions)
      AND ($2::text IS NULL OR queue = $2)
    GROUP BY queue
), r AS (
    SELECT queue, count(*) AS running
    FROM tasks WHERE status = 'running' AND ($2::text IS NULL OR queue = $2)
    GROUP BY queue
), names AS (
    SELECT queue FROM s
    UNION SELECT queue FROM r
    UNION SELECT queue FROM queue_pauses
    UNION SELECT unnest($1::text[])
)
SELECT n.queue, coalesce(s.depth, 0) AS depth, coalesce(s.due, 0) AS due, s.oldest_due_age_s,
       coalesce(r.running, 0) AS running, p.paused_at, p.paused_by,
       coalesce(w.due_without_worker, 0) AS due_without_worker,
       coalesce(w.actions_without_worker, '{}') AS actions_without_worker
FROM names n
LEFT JOIN s USING (queue) LEFT JOIN w USING (queue) LEFT JOIN r USING (queue)
LEFT JOIN queue_pauses p USING (queue)
WHERE $2::text IS NULL OR n.queue = $2
ORDER BY n.queue
"""

# -- workers: the daemons that run tasks, and their actions -----------------------------------

# A daemon's row, made or refreshed: the actions it runs, seen now.
UPSERT_WORKER = """
INSERT INTO workers (owner, actions) VALUES ($1, $2::text[])
ON CONFLICT (owner) DO UPDATE SET actions = EXCLUDED.actions, seen_at = now()
"""

DELETE_WORKER = "DELETE FROM workers WHERE owner = $1"

# Rows of daemons gone long ago (killed, not stopped): $1 seconds unseen.
FORGET_WORKERS = """
DELETE FROM workers WHERE seen_at < now() - make_interval(secs => $1::float8)
"""

# The actions some live daemon (seen within $1 seconds) runs.
_LIVE_ACTIONS = """ARRAY(SELECT DISTINCT unnest(actions) FROM workers
          WHERE seen_at > now() - make_interval(secs => {ttl}::float8))"""

LIVE_ACTIONS = f"SELECT {_LIVE_ACTIONS.format(ttl='$1')} AS actions"

# Due scheduled tasks that no live daemon can run, per queue and action (the index of due
# tasks, tasks_next_run_idx, walks only what is due).
UNRUNNABLE_DUE = f"""
SELECT queue, action, count(*) AS due,
       extract(epoch FROM now() - min(run_at))::float8 AS oldest_due_age_s
FROM tasks
WHERE status = 'scheduled' AND run_at <= now() AND action <> ALL({_LIVE_ACTIONS.format(ttl="$1")})
GROUP BY queue, action
ORDER BY queue, action
"""
