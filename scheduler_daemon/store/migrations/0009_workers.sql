-- The daemons that run tasks, and the actions each can run: a daemon claims only tasks of its
-- own actions, and a due task whose action no live daemon runs is shown as such (the API,
-- GET /v1/queues, metrics, the dashboard) instead of being claimed and failed by one that
-- cannot run it (a rolling deploy that adds a handler). Each daemon refreshes its row while it
-- runs and deletes it when it stops; a row not refreshed for a while is a daemon gone.
CREATE TABLE workers (
    owner text PRIMARY KEY,
    actions text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);
