-- Task search (GET /v1/tasks?q=): idempotency keys by prefix. The unique index on
-- idempotency_key serves equality only (a prefix LIKE can use it under the C collation
-- alone); text_pattern_ops compares byte-wise, so prefix searches find their keys in any
-- collation. Partial like the unique index: tasks without a key are not in it.
CREATE INDEX tasks_idempotency_key_pattern_idx ON tasks (idempotency_key text_pattern_ops)
    WHERE idempotency_key IS NOT NULL;
