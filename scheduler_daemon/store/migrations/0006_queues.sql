-- Queues: pause/resume and the per-queue claim path that queue limits use.

-- A queue is paused while it has a row here; claims (discovery and the SQS consumer) skip
-- its tasks, whichever daemon paused it. Tasks may be added to a paused queue.
CREATE TABLE queue_pauses (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text
);

-- Claims within one queue (a queue with limits, or every queue not excluded while others are
-- paused or at their limits), in claim order; also how the queues with scheduled work are
-- listed without reading every row (a loose index scan over the leading column).
CREATE INDEX tasks_queue_claim_idx ON tasks (queue, priority DESC, run_at, id)
    WHERE status = 'scheduled';
