-- A task's own retry delays (POST /v1/tasks "retry": {base_s, cap_s}); NULL: its queue's
-- ([queues.NAME.retry]) or the daemon's [retry], read when an attempt fails. Nullable columns
-- without a default: adding them rewrites no row.
ALTER TABLE tasks ADD COLUMN retry_base_s float8, ADD COLUMN retry_cap_s float8;
ALTER TABLE tasks_archive ADD COLUMN retry_base_s float8, ADD COLUMN retry_cap_s float8;
