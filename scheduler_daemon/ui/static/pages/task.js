// One task: its fields, payload (secrets come masked from the API), result, and the timeline
// of its attempts; cancel, run now and retry where its status allows them.

import {
  actionMessage,
  add,
  autoRefresh,
  badge,
  duration,
  fill,
  h,
  json,
  runAction,
  taskLink,
  time,
} from "../dom.js";

// Which operations each status allows (the API answers 409 otherwise).
const ACTIONS = [
  {
    key: "cancel",
    label: "Cancel",
    method: "DELETE",
    path: (id) => `/v1/tasks/${id}`,
    allowed: ["waiting", "scheduled"],
    done: "Task cancelled.",
    className: "btn-danger",
  },
  {
    key: "run",
    label: "Run now",
    method: "POST",
    path: (id) => `/v1/tasks/${id}/run`,
    allowed: ["scheduled"],
    done: "Task due now: it runs as soon as a worker is free.",
    className: "btn-primary",
  },
  {
    key: "retry",
    label: "Retry",
    method: "POST",
    path: (id) => `/v1/tasks/${id}/retry`,
    allowed: ["failed", "cancelled"],
    done: "Task re-queued as a new attempt series.",
    className: "btn-primary",
  },
];

function prop(label, value) {
  return h("div", { class: "prop" }, h("dt", {}, label), h("dd", {}, value));
}

function code(text) {
  return h("code", { class: "mono" }, text);
}

function none() {
  return h("span", { class: "muted" }, "—");
}

function properties(task) {
  return h(
    "dl",
    { class: "props" },
    prop("Status", [
      badge(task.status),
      task.no_capable_worker
        ? h(
            "span",
            { class: "no-worker", id: "no-capable-worker" },
            " no running daemon can run this action: it waits for one that can",
          )
        : null,
    ]),
    prop("Action", code(task.action)),
    prop(
      "Queue",
      h("a", { href: `/ui/tasks?queue=${encodeURIComponent(task.queue)}` }, task.queue),
    ),
    prop("Priority", String(task.priority)),
    prop("Runs at", time(task.run_at, { withRelative: true })),
    prop("Attempts", `${task.attempts} of ${task.max_attempts}`),
    prop("Timeout", duration(task.timeout_s)),
    prop("Idempotency key", task.idempotency_key ? code(task.idempotency_key) : none()),
    prop(
      "Schedule",
      task.schedule_id
        ? h(
            "span",
            {},
            h(
              "a",
              { href: `/ui/tasks?schedule_id=${encodeURIComponent(task.schedule_id)}` },
              code(task.schedule_id),
            ),
            task.scheduled_for ? [" occurrence of ", time(task.scheduled_for)] : null,
          )
        : none(),
    ),
    prop("Previous occurrence", task.parent_task_id ? taskLink(task.parent_task_id) : none()),
    prop(
      "Depends on",
      task.depends_on?.length
        ? h(
            "ul",
            { class: "inline-list" },
            task.depends_on.map((id) => h("li", {}, taskLink(id))),
          )
        : none(),
    ),
    prop(
      "Lease",
      task.lease_owner
        ? h("span", {}, code(task.lease_owner), " until ", time(task.lease_expires_at))
        : none(),
    ),
    prop("Created", time(task.created_at)),
    prop("Updated", time(task.updated_at)),
    prop("Started", time(task.started_at)),
    prop("Finished", time(task.finished_at)),
  );
}

function block(title, id, content) {
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), content);
}

function pre(value, className = "") {
  return h("pre", { class: ["code", className], tabindex: "0" }, value);
}

function timeline(attempts) {
  if (!attempts.length) return h("p", { class: "muted" }, "No attempts yet.");
  return h(
    "ol",
    { class: "timeline" },
    attempts.map((a) =>
      h(
        "li",
        { class: ["attempt", `attempt-${a.outcome}`], dataset: { attempt: a.number } },
        h(
          "h3",
          {},
          `Attempt ${a.number} `,
          h(
            "span",
            { class: ["badge", `badge-outcome-${a.outcome}`] },
            a.outcome.replace("_", " "),
          ),
        ),
        h(
          "p",
          { class: "attempt-meta" },
          "Started ",
          time(a.started_at),
          ", took ",
          a.duration_ms === null || a.duration_ms === undefined
            ? "an unknown time"
            : duration(a.duration_ms / 1000),
          " on worker ",
          code(a.worker),
          ".",
        ),
        a.error ? [h("h4", {}, "Error"), pre(a.error, "error-text")] : null,
        a.output
          ? h("details", { open: !a.error }, h("summary", {}, "Captured output"), pre(a.output))
          : null,
      ),
    ),
  );
}

export async function render(ctx) {
  const id = ctx.params[0];
  ctx.title(`Task ${id.slice(0, 8)}`);
  const head = h(
    "div",
    { class: "page-head" },
    h("h1", {}, "Task ", h("span", { class: "mono heading-id" }, id)),
  );
  const body = h("div", { class: "task", "aria-busy": "true" });

  async function load() {
    const [task, attempts] = await Promise.all([
      ctx.api("GET", `/v1/tasks/${encodeURIComponent(id)}`),
      ctx.api("GET", `/v1/tasks/${encodeURIComponent(id)}/attempts`),
    ]);
    fill(
      body,
      actions(task),
      h("section", { class: "panel", "aria-label": "Details" }, properties(task)),
      task.last_error
        ? block("Last error", "last-error", pre(task.last_error, "error-text"))
        : null,
      block("Payload", "payload", pre(json(task.payload))),
      task.result !== null && task.result !== undefined
        ? block("Result", "result", pre(json(task.result)))
        : null,
      task.metadata && Object.keys(task.metadata).length
        ? block("Metadata", "metadata", pre(json(task.metadata)))
        : null,
      block(`Attempts (${attempts.items.length})`, "attempts", timeline(attempts.items ?? [])),
    );
    body.setAttribute("aria-busy", "false");
  }

  function actions(task) {
    const allowed = ACTIONS.filter((a) => a.allowed.includes(task.status));
    const message = actionMessage();
    const group = h("div", { class: "actions", role: "group", "aria-label": "Task actions" });
    if (!allowed.length) {
      return h(
        "div",
        { class: "action-bar" },
        h("p", { class: "muted" }, `A ${task.status} task has no actions.`),
      );
    }
    if (!ctx.can("write")) {
      return h(
        "div",
        { class: "action-bar" },
        h(
          "p",
          { class: "note", id: "readonly-note" },
          `Your token's role (${ctx.session.role}) can look but not change: `,
          `${allowed.map((a) => a.label.toLowerCase()).join(", ")} need the write role.`,
        ),
      );
    }
    for (const action of allowed) {
      const button = h(
        "button",
        {
          type: "button",
          class: ["btn", action.className],
          dataset: { action: action.key },
          "aria-describedby": message.id,
        },
        action.label,
      );
      button.addEventListener("click", async () => {
        const result = await runAction(
          button,
          message,
          () => ctx.api(action.method, action.path(encodeURIComponent(id))),
          { success: action.done, needs: "write" },
        );
        if (result.ok || result.error?.status === 409) {
          const keep = message.textContent;
          await load();
          const fresh = body.querySelector(".action-msg");
          if (fresh && keep) {
            fresh.textContent = keep;
            fresh.classList.add("error");
          }
          // Keep the keyboard where it was: on the next action, or on the action bar.
          const next = body.querySelector(".actions button") ?? body.querySelector(".action-bar p");
          if (next) {
            if (!(next instanceof HTMLButtonElement)) next.tabIndex = -1;
            next.focus();
          }
        }
      });
      group.append(button);
    }
    return h("div", { class: "action-bar" }, group, message);
  }

  add(ctx.main, head, h("div", { class: "page-tools" }, autoRefresh(ctx, "task", load)), body);
  await load();
}
