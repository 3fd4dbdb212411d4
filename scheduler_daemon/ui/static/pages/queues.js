// Queues: depth, due, running, age of the oldest due task, limits; pause and resume.

import {
  actionMessage,
  add,
  autoRefresh,
  badge,
  duration,
  errorBox,
  fill,
  h,
  num,
  runAction,
  table,
  td,
  time,
} from "../dom.js";

function limit(value, unit = "") {
  if (value === null || value === undefined) {
    return h("span", { class: "muted", title: "no limit" }, "none");
  }
  return `${num(value)}${unit}`;
}

function queueRow(ctx, queue, reload) {
  const message = actionMessage();
  let action = null;
  if (ctx.can("write")) {
    const pausing = !queue.paused;
    const button = h(
      "button",
      {
        type: "button",
        class: ["btn", "btn-small", pausing ? "" : "btn-primary"],
        dataset: { action: pausing ? "pause" : "resume" },
        "aria-label": `${pausing ? "Pause" : "Resume"} queue ${queue.name}`,
        "aria-describedby": message.id,
      },
      pausing ? "Pause" : "Resume",
    );
    button.addEventListener("click", async () => {
      const verb = pausing ? "pause" : "resume";
      const result = await runAction(
        button,
        message,
        () => ctx.api("POST", `/v1/queues/${encodeURIComponent(queue.name)}/${verb}`),
        { success: `Queue ${queue.name} ${pausing ? "paused" : "resumed"}.`, needs: "write" },
      );
      if (result.ok) await reload();
    });
    action = h("div", { class: "row-actions" }, button, message);
  }
  const limits = queue.limits ?? {};
  return h(
    "tr",
    { dataset: { queue: queue.name } },
    h(
      "th",
      { scope: "row" },
      h("a", { href: `/ui/tasks?queue=${encodeURIComponent(queue.name)}` }, queue.name),
    ),
    td(
      queue.paused
        ? h(
            "span",
            { class: "paused-state" },
            badge("paused"),
            queue.paused_at ? [" since ", time(queue.paused_at)] : null,
            queue.paused_by ? [" by ", queue.paused_by] : null,
          )
        : badge("active"),
    ),
    td(num(queue.depth), "num"),
    td(
      [
        num(queue.due),
        queue.due_without_worker
          ? h(
              "span",
              {
                class: "no-worker",
                dataset: { noWorker: String(queue.due_without_worker) },
                title: `actions no running daemon runs: ${queue.actions_without_worker.join(", ")}`,
              },
              ` (${num(queue.due_without_worker)} with no capable worker)`,
            )
          : null,
      ],
      "num",
    ),
    td(num(queue.running), "num"),
    td(
      queue.oldest_due_age_s === null
        ? h("span", { class: "muted" }, "—")
        : duration(queue.oldest_due_age_s),
      "num",
    ),
    td(limit(limits.concurrency), "num"),
    td(limit(limits.global_concurrency), "num"),
    td(limit(limits.rate_per_s, " /s"), "num"),
    td(limit(limits.burst), "num"),
    ctx.can("write") ? td(action) : null,
  );
}

export async function render(ctx) {
  ctx.title("Queues");
  const results = h("div", { class: "results", "aria-busy": "true" });

  async function load() {
    const data = await ctx.api("GET", "/v1/queues");
    const queues = data.queues ?? [];
    const write = ctx.can("write");
    const col = (label, className = "", rowspan = "2") =>
      h("th", { scope: "col", class: className, rowspan }, label);
    const head = [
      h(
        "tr",
        {},
        col("Queue"),
        col("State"),
        col("Depth", "num"),
        col("Due now", "num"),
        col("Running", "num"),
        col("Oldest due", "num"),
        h("th", { scope: "colgroup", colspan: "4", class: "group" }, "Limits"),
        write ? col("Actions") : null,
      ),
      h(
        "tr",
        {},
        col("Concurrency", "num", null),
        col("Across daemons", "num", null),
        col("Rate", "num", null),
        col("Burst", "num", null),
      ),
    ];
    fill(
      results,
      queues.length
        ? table({
            caption: "Queues",
            captionHidden: true,
            head,
            rows: queues.map((q) => queueRow(ctx, q, load)),
            className: "queues",
          })
        : h("p", { class: "muted" }, "No queues yet: a queue appears when a task names it."),
    );
    results.setAttribute("aria-busy", "false");
  }

  add(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "Queues"), autoRefresh(ctx, "queues", load)),
    h(
      "p",
      { class: "lead" },
      "Depth counts scheduled tasks; due now, those whose time has come. Limits are this ",
      "daemon's settings: running tasks per daemon and across daemons, starts per second and ",
      "burst. A paused queue keeps its tasks but starts none until it is resumed.",
    ),
    ctx.can("write")
      ? null
      : h(
          "p",
          { class: "note", id: "readonly-note" },
          `Your token's role (${ctx.session.role}) can look at queues; pausing and resuming `,
          "them needs the write role.",
        ),
    results,
  );
  try {
    await load();
  } catch (error) {
    if (error?.name === "AbortError" || error?.status === 401) throw error;
    fill(
      results,
      errorBox(
        error,
        error?.status === 404 ? "This daemon has no queue API yet" : "Queues could not be listed",
      ),
    );
  }
}
