// Tasks: filters (status, action, queue, schedule, id or idempotency key), cursor paging,
// auto-refresh. The filters live in the address, so a filtered view can be bookmarked.

import {
  STATUSES,
  add,
  autoRefresh,
  badge,
  field,
  filterBox,
  fill,
  h,
  pager,
  plural,
  select,
  table,
  taskLink,
  td,
  time,
} from "../dom.js";

const FILTERS = ["status", "action", "queue", "schedule_id", "q"];
const PAGE_SIZES = ["10", "25", "50", "100"];
export const DEFAULT_LIMIT = "25";

function truncate(text, length = 160) {
  if (!text) return "";
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

export function taskRow(task) {
  return h(
    "tr",
    { dataset: { taskId: task.id } },
    h(
      "th",
      { scope: "row" },
      taskLink(task.id),
      task.idempotency_key
        ? h("div", { class: "muted small mono", title: "idempotency key" }, task.idempotency_key)
        : null,
    ),
    td(badge(task.status)),
    td(task.action),
    td(task.queue),
    td(time(task.run_at, { withRelative: true })),
    td(`${task.attempts} / ${task.max_attempts}`, "num"),
    td(time(task.created_at)),
    td(
      task.last_error
        ? h("span", { class: "error-text", title: task.last_error }, truncate(task.last_error))
        : h("span", { class: "muted" }, "—"),
    ),
  );
}

export const TASK_COLUMNS = [
  { label: "Task" },
  { label: "Status" },
  { label: "Action" },
  { label: "Queue" },
  { label: "Runs at" },
  { label: "Attempts", className: "num" },
  { label: "Created" },
  { label: "Last error" },
];

function filterForm(ctx) {
  const q = ctx.query;
  const status = select(
    [["", "Any status"], ...STATUSES.map((s) => [s, s])],
    q.get("status") ?? "",
    { name: "status", id: "filter-status" },
  );
  const text = (name, id, attrs = {}) =>
    h("input", { name, id, type: "text", value: q.get(name) ?? "", autocomplete: "off", ...attrs });
  const limit = select(
    PAGE_SIZES.map((n) => [n, n]),
    q.get("limit") ?? DEFAULT_LIMIT,
    { name: "limit", id: "filter-limit" },
  );
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter tasks" },
    field(
      "Search",
      text("q", "filter-q", { type: "search", placeholder: "task id or idempotency key" }),
      "An exact task id, or the start of an idempotency key",
    ),
    field("Status", status),
    field("Action", text("action", "filter-action")),
    field("Queue", text("queue", "filter-queue")),
    field("Schedule id", text("schedule_id", "filter-schedule")),
    field("Rows per page", limit),
    h(
      "div",
      { class: "filter-buttons" },
      h("button", { type: "submit", class: "btn btn-primary" }, "Apply filters"),
      h(
        "button",
        { type: "button", class: "btn", onclick: () => ctx.navigate("/ui/tasks") },
        "Clear",
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      const v = String(value).trim();
      if (v && !(key === "limit" && v === DEFAULT_LIMIT)) params.set(key, v);
    }
    const search = params.toString();
    ctx.navigate(`/ui/tasks${search ? `?${search}` : ""}`);
  });
  return form;
}

export async function render(ctx) {
  ctx.title("Tasks");
  const results = h("div", { class: "results", "aria-busy": "true" });
  const query = {};
  for (const key of FILTERS) query[key] = ctx.query.get(key) ?? "";
  query.limit = ctx.query.get("limit") ?? DEFAULT_LIMIT;
  query.cursor = ctx.query.get("cursor") ?? "";
  const filtered = FILTERS.some((key) => query[key]);

  async function load() {
    const page = await ctx.api("GET", "/v1/tasks", { query });
    const items = page.items ?? [];
    fill(
      results,
      h(
        "p",
        { class: "summary", id: "tasks-summary" },
        items.length
          ? `${plural(items.length, "task")} on this page, newest first.`
          : filtered
            ? "No task matches these filters."
            : "No tasks yet.",
      ),
      items.length
        ? table({
            caption: filtered ? "Tasks matching the filters" : "Tasks",
            captionHidden: true,
            columns: TASK_COLUMNS,
            rows: items.map(taskRow),
            className: "tasks",
          })
        : null,
      pager(ctx, page.next_cursor, "Task pages"),
    );
    results.setAttribute("aria-busy", "false");
  }

  add(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "Tasks"), autoRefresh(ctx, "tasks", load)),
    filterBox(filterForm(ctx), filtered),
    results,
  );
  await load();
}
