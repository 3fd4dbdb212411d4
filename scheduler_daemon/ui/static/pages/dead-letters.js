// Dead letters: failed tasks with their last error; retry or discard the selected ones.

import {
  actionMessage,
  add,
  announce,
  field,
  filterBox,
  fill,
  h,
  pager,
  plural,
  runAction,
  table,
  taskLink,
  td,
  time,
} from "../dom.js";

function filterForm(ctx) {
  const text = (name, id) =>
    h("input", { name, id, type: "text", value: ctx.query.get(name) ?? "", autocomplete: "off" });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter dead letters" },
    field("Action", text("action", "dl-action")),
    field("Queue", text("queue", "dl-queue")),
    h(
      "div",
      { class: "filter-buttons" },
      h("button", { type: "submit", class: "btn btn-primary" }, "Apply filters"),
      h(
        "button",
        { type: "button", class: "btn", onclick: () => ctx.navigate("/ui/dead-letters") },
        "Clear",
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      if (String(value).trim()) params.set(key, String(value).trim());
    }
    const search = params.toString();
    ctx.navigate(`/ui/dead-letters${search ? `?${search}` : ""}`);
  });
  return form;
}

export async function render(ctx) {
  ctx.title("Dead letters");
  const admin = ctx.can("admin");
  const results = h("div", { class: "results", "aria-busy": "true" });
  const message = actionMessage();
  const retryButton = h(
    "button",
    {
      type: "button",
      class: "btn btn-primary",
      id: "dl-retry",
      disabled: true,
      "aria-describedby": message.id,
    },
    "Retry selected",
  );
  const discardButton = h(
    "button",
    {
      type: "button",
      class: "btn btn-danger",
      id: "dl-discard",
      disabled: true,
      "aria-describedby": message.id,
    },
    "Discard selected…",
  );
  const confirmBox = h("div", { class: "confirm", hidden: true });
  const toolbar = h(
    "div",
    { class: "action-bar" },
    h(
      "div",
      { class: "actions", role: "group", "aria-label": "Selected dead letters" },
      retryButton,
      discardButton,
    ),
    confirmBox,
    message,
  );

  const selected = () =>
    [...results.querySelectorAll("input.select-task:checked")].map((box) => box.value);

  function syncButtons() {
    const n = selected().length;
    retryButton.disabled = n === 0;
    discardButton.disabled = n === 0;
    retryButton.textContent = n ? `Retry selected (${n})` : "Retry selected";
    discardButton.textContent = n ? `Discard selected (${n})…` : "Discard selected…";
    const all = results.querySelector("input.select-all");
    if (all) {
      const boxes = results.querySelectorAll("input.select-task");
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
    if (!n) confirmBox.hidden = true;
  }

  async function load() {
    const page = await ctx.api("GET", "/v1/dead-letters", {
      query: {
        action: ctx.query.get("action") ?? "",
        queue: ctx.query.get("queue") ?? "",
        cursor: ctx.query.get("cursor") ?? "",
        limit: 50,
      },
    });
    const items = page.items ?? [];
    const columns = [
      ...(admin
        ? [
            {
              label: h(
                "span",
                {},
                h("input", {
                  type: "checkbox",
                  class: "select-all",
                  id: "dl-select-all",
                  "aria-label": "Select every task on this page",
                  onchange: (event) => {
                    for (const box of results.querySelectorAll("input.select-task")) {
                      box.checked = event.target.checked;
                    }
                    syncButtons();
                  },
                }),
              ),
            },
          ]
        : []),
      { label: "Task" },
      { label: "Action" },
      { label: "Queue" },
      { label: "Attempts", className: "num" },
      { label: "Failed at" },
      { label: "Last error" },
    ];
    const rows = items.map((task) =>
      h(
        "tr",
        { dataset: { taskId: task.id } },
        admin
          ? td(
              h("input", {
                type: "checkbox",
                class: "select-task",
                value: task.id,
                "aria-label": `Select task ${task.id}`,
                onchange: syncButtons,
              }),
            )
          : null,
        h("th", { scope: "row" }, taskLink(task.id)),
        td(task.action),
        td(task.queue),
        td(`${task.attempts} / ${task.max_attempts}`, "num"),
        td(time(task.finished_at ?? task.updated_at)),
        td(h("span", { class: "error-text pre-line" }, task.last_error ?? "—")),
      ),
    );
    fill(
      results,
      h(
        "p",
        { class: "summary" },
        items.length
          ? `${plural(items.length, "failed task")} on this page, newest first.`
          : "No dead letters: no task has failed for good.",
      ),
      items.length
        ? table({
            caption: "Failed tasks",
            captionHidden: true,
            columns,
            rows,
            className: "dead-letters",
          })
        : null,
      pager(ctx, page.next_cursor, "Dead-letter pages"),
    );
    results.setAttribute("aria-busy", "false");
    syncButtons();
  }

  retryButton.addEventListener("click", async () => {
    const ids = selected();
    const result = await runAction(
      retryButton,
      message,
      () => ctx.api("POST", "/v1/dead-letters/retry", { body: { ids } }),
      { success: (r) => `Re-queued ${plural(r.count, "task")}.`, needs: "admin" },
    );
    if (result.ok) await load();
  });

  discardButton.addEventListener("click", () => {
    const ids = selected();
    if (!ids.length) return;
    const confirm = h(
      "button",
      { type: "button", class: "btn btn-danger", id: "dl-confirm-discard" },
      `Delete ${plural(ids.length, "task")}`,
    );
    const keep = h("button", { type: "button", class: "btn" }, "Keep them");
    confirmBox.replaceChildren(
      h(
        "p",
        {},
        `Delete ${plural(ids.length, "failed task")} and ${ids.length === 1 ? "its" : "their"} `,
        "attempts? This cannot be undone.",
      ),
      confirm,
      keep,
    );
    confirmBox.hidden = false;
    keep.addEventListener("click", () => {
      confirmBox.hidden = true;
      announce("Nothing was discarded.");
      discardButton.focus();
    });
    confirm.addEventListener("click", async () => {
      const result = await runAction(
        confirm,
        message,
        () => ctx.api("DELETE", "/v1/dead-letters", { body: { ids } }),
        { success: (r) => `Discarded ${plural(r.count, "task")}.`, needs: "admin" },
      );
      confirmBox.hidden = true;
      if (result.ok) await load();
      discardButton.focus();
    });
    confirm.focus();
  });

  add(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "Dead letters")),
    h(
      "p",
      { class: "lead" },
      "Tasks that failed for good: their attempts are used up, or the error was not worth ",
      "retrying. Retry re-queues a task as a new attempt series; discard deletes it with its ",
      "attempts.",
    ),
    filterBox(filterForm(ctx), Boolean(ctx.query.get("action") || ctx.query.get("queue"))),
    admin
      ? toolbar
      : h(
          "p",
          { class: "note", id: "readonly-note" },
          `Your token's role (${ctx.session.role}) can look at dead letters; retrying and `,
          "discarding them needs the admin role.",
        ),
    results,
  );
  await load();
}
