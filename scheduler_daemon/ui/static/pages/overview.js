// Overview: readiness, counts by status and queue, and the last hour as charts (/v1/stats).

import { completionsChart, lagChart } from "../charts.js";
import { STATUSES, add, autoRefresh, fill, h, num, table, td, time } from "../dom.js";

function tile(label, value, href, note = "") {
  return h(
    "div",
    { class: "tile" },
    h("dt", {}, href ? h("a", { href }, label) : label),
    h("dd", { class: "tile-value", dataset: { metric: label } }, num(value)),
    note ? h("dd", { class: "muted small" }, note) : null,
  );
}

function health(stats) {
  const problems = Array.isArray(stats.problems) ? stats.problems : [];
  const unrunnable = Array.isArray(stats.no_capable_worker) ? stats.no_capable_worker : [];
  return h(
    "section",
    { class: "panel", "aria-labelledby": "health-title" },
    h("h2", { id: "health-title" }, "Daemon health"),
    h(
      "p",
      { class: "readiness" },
      h(
        "span",
        { class: ["pill", stats.ready ? "pill-ok" : "pill-bad"], id: "readiness" },
        stats.ready ? "Ready" : "Not ready",
      ),
      " ",
      stats.ready
        ? "This daemon takes traffic: database, LISTEN connection and every component are healthy."
        : "This daemon answers /readyz with 503 for the reasons below.",
    ),
    problems.length
      ? h(
          "ul",
          { class: "problems", "aria-label": "Problems" },
          problems.map((p) => h("li", {}, p)),
        )
      : h("p", { class: "muted" }, "No component reports a problem."),
    unrunnable.length
      ? [
          h("h3", {}, "Due tasks no running daemon can run"),
          h(
            "ul",
            { class: "problems", id: "no-capable-worker", "aria-label": "No capable worker" },
            unrunnable.map((u) =>
              h(
                "li",
                {},
                `${num(u.due)} of action ${u.action} in queue ${u.queue} (the oldest due `,
                `${Math.round(u.oldest_due_age_s)} s ago): no running daemon has this action; `,
                "they wait in scheduled for one that does.",
              ),
            ),
          ),
        ]
      : null,
    h("p", { class: "muted small" }, "Figures as of ", time(stats.generated_at), "."),
  );
}

function counts(stats) {
  const c = stats.counts ?? {};
  const byStatus = c.by_status ?? {};
  return h(
    "section",
    { class: "panel", "aria-labelledby": "counts-title" },
    h("h2", { id: "counts-title" }, "Tasks"),
    h(
      "dl",
      { class: "tiles tiles-highlight" },
      tile("Due now", c.due_now, "/ui/tasks?status=scheduled", "scheduled and due, not started"),
      tile("Running", c.running, "/ui/tasks?status=running"),
      tile("Failed in the last hour", c.failed_last_hour, "/ui/dead-letters"),
    ),
    h("h3", {}, "By status"),
    h(
      "dl",
      { class: "tiles" },
      STATUSES.map((s) => tile(s, byStatus[s] ?? 0, `/ui/tasks?status=${s}`)),
    ),
  );
}

function queues(stats) {
  const byQueue = stats.counts?.by_queue ?? {};
  const names = Object.keys(byQueue).sort();
  return h(
    "section",
    { class: "panel", "aria-labelledby": "by-queue-title" },
    h("h2", { id: "by-queue-title" }, "By queue"),
    names.length
      ? table({
          caption: "Tasks by queue and status",
          captionHidden: true,
          columns: [{ label: "Queue" }, ...STATUSES.map((s) => ({ label: s, className: "num" }))],
          rows: names.map((name) =>
            h(
              "tr",
              {},
              h(
                "th",
                { scope: "row" },
                h("a", { href: `/ui/tasks?queue=${encodeURIComponent(name)}` }, name),
              ),
              STATUSES.map((s) => td(num(byQueue[name]?.[s] ?? 0), "num")),
            ),
          ),
        })
      : h("p", { class: "muted" }, "No tasks yet."),
  );
}

function charts(stats) {
  const minutes = Array.isArray(stats.minutes) ? stats.minutes : [];
  return h(
    "section",
    { class: "panel", "aria-labelledby": "hour-title" },
    h("h2", { id: "hour-title" }, "The last hour"),
    h(
      "p",
      { class: "muted small" },
      "What the daemon that answered did: each replica keeps its own last hour.",
    ),
    minutes.length
      ? h("div", { class: "charts" }, completionsChart(minutes), lagChart(minutes))
      : h("p", { class: "muted" }, "No figures for the last hour."),
  );
}

export async function render(ctx) {
  ctx.title("Overview");
  const body = h("div", { class: "overview", "aria-busy": "true" });
  async function load() {
    const stats = await ctx.api("GET", "/v1/stats");
    fill(body, health(stats), counts(stats), queues(stats), charts(stats));
    body.setAttribute("aria-busy", "false");
  }
  add(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "Overview"), autoRefresh(ctx, "overview", load)),
    body,
  );
  await load();
}
