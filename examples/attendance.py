"""Example handlers: the attendance, newsletter and billing tasks of the Monoweb note (seed 003).

Load them with ``handlers.modules = ["examples.attendance"]`` (or the environment variable
``SCHEDULER_HANDLERS__MODULES='["examples.attendance"]'``), then create tasks such as::

    POST /v1/tasks
    {"action": "attendance.merge_pools", "payload": {"event_id": 7, "pools": ["a", "b"]},
     "run_at": "2030-05-01T18:00:00+02:00"}
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from scheduler_daemon import Fail, HandlerContext, Retry, handler

# -- attendance: merge the attendance pools of an event, one day before it starts ------------


class MergePoolsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: int = Field(gt=0)
    pools: list[str] = Field(min_length=2)
    fail_after_write: bool = False  # for the demonstration of a rollback


# A real application creates its tables in its own migrations; the example keeps to one file.
CREATE_MERGES = """
CREATE TABLE IF NOT EXISTS example_merges (
    event_id int NOT NULL,
    pools text[] NOT NULL,
    attempt int NOT NULL,
    merged_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT_MERGE = "INSERT INTO example_merges (event_id, pools, attempt) VALUES ($1, $2, $3)"


@handler("attendance.merge_pools", payload=MergePoolsPayload)
async def merge_pools(ctx: HandlerContext, payload: MergePoolsPayload) -> dict[str, int]:
    # Everything in this block commits together, or not at all. The task's status and attempt
    # are recorded outside it, so a rollback still leaves a failed attempt on record.
    async with ctx.transaction() as conn:
        await conn.execute(CREATE_MERGES)
        await conn.execute(INSERT_MERGE, payload.event_id, payload.pools, ctx.attempt)
        if payload.fail_after_write:
            raise RuntimeError(f"merging the pools of event {payload.event_id} failed")
    ctx.log.info("pools_merged", event_id=payload.event_id, pools=len(payload.pools))
    return {"event_id": payload.event_id, "merged": len(payload.pools)}


# -- newsletter: the mail provider asks us to come back later ----------------------------------


class SendWeeklyPayload(BaseModel):
    issue: int = Field(gt=0)


NEWSLETTER_RETRY_AFTER = timedelta(seconds=1)


@handler("newsletter.send_weekly", payload=SendWeeklyPayload)
async def send_weekly(ctx: HandlerContext, payload: SendWeeklyPayload) -> dict[str, int]:
    if ctx.attempt == 1:
        # Retry counts as a failed attempt and runs again after the given delay, instead of
        # the configured backoff.
        raise Retry("mail provider is busy", after=NEWSLETTER_RETRY_AFTER)
    ctx.log.info("newsletter_sent", issue=payload.issue)
    return {"issue": payload.issue}


# -- billing: some failures are final ----------------------------------------------------------


class ChargePayload(BaseModel):
    customer_id: str = Field(min_length=1, max_length=100)
    amount_cents: int = Field(gt=0)


CARD_LIMIT_CENTS = 100_000


@handler("billing.charge", payload=ChargePayload)
async def charge(ctx: HandlerContext, payload: ChargePayload) -> dict[str, str | int]:
    if payload.amount_cents > CARD_LIMIT_CENTS:
        # Fail ends the task now: retrying a declined card cannot help.
        raise Fail("card declined")
    return {"customer_id": payload.customer_id, "charged_cents": payload.amount_cents}
