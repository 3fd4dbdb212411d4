// Schedules: each with its rule in words, next five occurrences, paused state and
// pause/resume; a form to create one, previewing the rule while it is typed.

import {
  actionMessage,
  add,
  badge,
  duration,
  errorBox,
  field,
  fill,
  h,
  localZone,
  pager,
  runAction,
  select,
  table,
  td,
  time,
  uid,
} from "../dom.js";

const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const PREVIEW_COUNT = 5;
const PREVIEW_DELAY_MS = 350;

/** The rule in words: the daemon's own description, or one made here from the fields. */
export function describe(schedule) {
  if (schedule.description) return schedule.description;
  const zone = schedule.timezone ?? "UTC";
  const at = (schedule.at ?? "00:00:00").slice(0, 5);
  if (schedule.cron) return `cron "${schedule.cron}" in ${zone}`;
  if (schedule.interval_s) return `every ${duration(schedule.interval_s)}`;
  switch (schedule.preset) {
    case "hourly":
      return `every hour at minute ${at.slice(3, 5)}`;
    case "daily":
      return `every day at ${at} ${zone}`;
    case "weekly":
      return `every ${WEEKDAYS[schedule.weekday ?? 0]} at ${at} ${zone}`;
    case "monthly":
      return `on day ${schedule.day_of_month ?? 1} of every month at ${at} ${zone}`;
    default:
      return "—";
  }
}

/** The occurrences of a preview as a list, in the browser's zone (and the schedule's). */
function occurrenceList(preview) {
  const browserZone = localZone();
  return h(
    "ol",
    { class: "occurrences" },
    (preview.occurrences ?? []).map((o) =>
      h(
        "li",
        {},
        time(o.utc),
        preview.timezone && preview.timezone !== browserZone && o.local
          ? h("span", { class: "muted small" }, ` (${o.local.slice(11, 16)} ${preview.timezone})`)
          : null,
      ),
    ),
  );
}

function scheduleRow(ctx, schedule, preview, reload) {
  const message = actionMessage();
  const cells = [];
  if (ctx.can("admin")) {
    const pausing = !schedule.paused;
    const button = h(
      "button",
      {
        type: "button",
        class: ["btn", "btn-small", pausing ? "" : "btn-primary"],
        dataset: { action: pausing ? "pause" : "resume" },
        "aria-label": `${pausing ? "Pause" : "Resume"} ${schedule.name}`,
        "aria-describedby": message.id,
      },
      pausing ? "Pause" : "Resume",
    );
    button.addEventListener("click", async () => {
      const verb = pausing ? "pause" : "resume";
      const result = await runAction(
        button,
        message,
        () => ctx.api("POST", `/v1/schedules/${schedule.id}/${verb}`),
        { success: `Schedule ${schedule.name} ${pausing ? "paused" : "resumed"}.`, needs: "admin" },
      );
      if (result.ok) await reload();
    });
    cells.push(button);
  }
  cells.push(
    h(
      "a",
      {
        href: `/ui/tasks?schedule_id=${encodeURIComponent(schedule.id)}`,
        class: "small",
        "aria-label": `Tasks of ${schedule.name}`,
      },
      "Tasks",
    ),
  );
  return h(
    "tr",
    { dataset: { scheduleId: schedule.id } },
    h("th", { scope: "row", title: `id ${schedule.id}` }, schedule.name),
    td(h("span", { class: "rule-words" }, describe(schedule))),
    td(`${schedule.task.action} · ${schedule.task.queue}`),
    td(
      preview instanceof Error
        ? h("span", { class: "error-text" }, preview.message)
        : occurrenceList(preview),
    ),
    td(schedule.paused ? badge("paused") : badge("active")),
    td(h("div", { class: "row-actions" }, cells, message)),
  );
}

async function listSection(ctx, container) {
  async function load() {
    const page = await ctx.api("GET", "/v1/schedules", {
      query: { cursor: ctx.query.get("cursor") ?? "", limit: 25 },
    });
    const items = page.items ?? [];
    const previews = await Promise.all(
      items.map((s) =>
        ctx
          .api("GET", `/v1/schedules/${s.id}/preview`, { query: { count: PREVIEW_COUNT } })
          .catch((error) => (error?.name === "AbortError" ? Promise.reject(error) : error)),
      ),
    );
    fill(
      container,
      items.length
        ? table({
            caption: "Schedules",
            captionHidden: true,
            columns: [
              { label: "Name" },
              { label: "Rule" },
              { label: "Task (action · queue)" },
              { label: `Next ${PREVIEW_COUNT} occurrences` },
              { label: "State" },
              { label: "Actions" },
            ],
            rows: items.map((s, i) => scheduleRow(ctx, s, previews[i], load)),
            className: "schedules",
          })
        : h("p", { class: "muted" }, "No schedules yet."),
      pager(ctx, page.next_cursor, "Schedule pages"),
    );
    container.setAttribute("aria-busy", "false");
  }
  await load();
  return load;
}

// -- the create form ------------------------------------------------------------------------

function createForm(ctx, reloadList) {
  const input = (attrs) => h("input", { type: "text", autocomplete: "off", ...attrs });
  const name = input({
    name: "name",
    id: "new-name",
    required: true,
    pattern: "[A-Za-z0-9_.:/-]+",
  });
  const kind = select(
    [
      ["preset", "Preset: hourly, daily, weekly, monthly"],
      ["cron", "Cron expression"],
      ["interval", "Fixed interval"],
    ],
    "preset",
    { id: "new-kind", name: "kind" },
  );
  const cron = input({
    name: "cron",
    id: "new-cron",
    placeholder: "0 9 * * 1-5",
    spellcheck: "false",
  });
  const interval = h("input", {
    type: "number",
    name: "interval_s",
    id: "new-interval",
    min: "1",
    step: "any",
    value: "3600",
  });
  const preset = select(
    [
      ["hourly", "hourly"],
      ["daily", "daily"],
      ["weekly", "weekly"],
      ["monthly", "monthly"],
    ],
    "weekly",
    { id: "new-preset", name: "preset" },
  );
  const at = h("input", { type: "time", name: "at", id: "new-at", value: "09:00", step: "1" });
  const weekday = select(
    WEEKDAYS.map((day, i) => [String(i), day]),
    "0",
    { id: "new-weekday", name: "weekday" },
  );
  const dayOfMonth = h("input", {
    type: "number",
    name: "day_of_month",
    id: "new-day",
    min: "1",
    max: "31",
    value: "1",
  });
  const zones =
    typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const zoneList = h(
    "datalist",
    { id: uid("zones") },
    ["UTC", ...zones].map((z) => h("option", { value: z })),
  );
  const timezone = input({ name: "timezone", id: "new-timezone", value: "UTC", list: zoneList.id });
  const action = input({ name: "action", id: "new-action", value: "log", list: "new-actions" });
  const actionList = h(
    "datalist",
    { id: "new-actions" },
    ["log", "noop", "webhook", "sqs"].map((a) => h("option", { value: a })),
  );
  const queue = input({ name: "queue", id: "new-queue", value: "default" });
  const payload = h(
    "textarea",
    { name: "payload", id: "new-payload", rows: "4", spellcheck: "false" },
    '{"message": "scheduled from the dashboard"}',
  );
  const paused = h("input", { type: "checkbox", name: "paused", id: "new-paused" });

  const cronField = field("Cron expression", cron, "5 fields, or 6 with the seconds first");
  const intervalField = field("Interval (seconds)", interval, "At least 1");
  const presetField = field("Preset", preset);
  const atField = field("At (local time of day)", at, "hourly uses its minutes and seconds");
  const weekdayField = field("Weekday", weekday);
  const dayField = field("Day of month", dayOfMonth, "Months without that day are skipped");

  const words = h("p", { class: "rule-words", id: "preview-words" });
  const previewBody = h("div", {
    class: "preview-body",
    id: "preview",
    "aria-live": "polite",
    "aria-atomic": "true",
  });
  const formError = h("div", { class: "form-error", id: "new-error", role: "alert" });

  function syncFields() {
    const k = kind.value;
    cronField.hidden = k !== "cron";
    intervalField.hidden = k !== "interval";
    for (const el of [presetField, atField]) el.hidden = k !== "preset";
    weekdayField.hidden = k !== "preset" || preset.value !== "weekly";
    dayField.hidden = k !== "preset" || preset.value !== "monthly";
  }

  function rule() {
    const body = { timezone: timezone.value.trim() || "UTC" };
    if (kind.value === "cron") body.cron = cron.value.trim();
    else if (kind.value === "interval") body.interval_s = Number(interval.value);
    else {
      body.preset = preset.value;
      body.at = at.value.length === 5 ? `${at.value}:00` : at.value || "00:00:00";
      if (preset.value === "weekly") body.weekday = Number(weekday.value);
      if (preset.value === "monthly") body.day_of_month = Number(dayOfMonth.value);
    }
    return body;
  }

  let previewTimer = null;
  let previewController = null;

  async function preview() {
    previewController?.abort();
    const controller = new AbortController();
    previewController = controller;
    ctx.signal.addEventListener("abort", () => controller.abort(), { once: true });
    const r = rule();
    if (kind.value === "cron" && !r.cron) {
      previewBody.replaceChildren(h("p", { class: "muted" }, "Type a cron expression."));
      return;
    }
    previewBody.setAttribute("aria-busy", "true");
    try {
      // The rule alone: a placeholder name and task, so that the preview never waits for them.
      const result = await ctx.api("POST", "/v1/schedules/preview", {
        query: { count: PREVIEW_COUNT },
        body: { name: "preview", task: { action: "noop" }, ...r },
        signal: controller.signal,
      });
      previewBody.replaceChildren(
        h("p", { class: "rule-words", id: "preview-words" }, describe({ ...r, ...result })),
        h("p", { class: "muted small" }, `Next ${PREVIEW_COUNT} occurrences:`),
        occurrenceList(result),
      );
    } catch (error) {
      if (error?.name === "AbortError") return;
      previewBody.replaceChildren(
        h(
          "p",
          { class: "error-text" },
          error.fields?.length
            ? error.fields.map((f) => `${f.field}: ${f.message}`).join("; ")
            : error.message,
        ),
      );
    } finally {
      if (previewController === controller) previewBody.removeAttribute("aria-busy");
    }
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, PREVIEW_DELAY_MS);
  }

  const form = h(
    "form",
    { class: "create-schedule", "aria-labelledby": "new-title", novalidate: true },
    h("h2", { id: "new-title" }, "New schedule"),
    h("div", { class: "name-field" }, field("Name", name, "Unique; letters, digits and _ . : / -")),
    h(
      "div",
      { class: "form-grid" },
      h(
        "fieldset",
        { class: "rule" },
        h("legend", {}, "Rule"),
        field("Kind of rule", kind),
        cronField,
        intervalField,
        presetField,
        atField,
        weekdayField,
        dayField,
        field("Time zone", timezone, "An IANA name, e.g. Europe/Oslo"),
        zoneList,
      ),
      h(
        "fieldset",
        { class: "template" },
        h("legend", {}, "Task to run"),
        field("Action", action),
        actionList,
        field("Queue", queue),
        field("Payload (JSON)", payload),
        h("div", { class: "check" }, paused, h("label", { for: paused.id }, "Create it paused")),
      ),
      h(
        "section",
        { class: "preview", "aria-labelledby": "preview-title" },
        h("h3", { id: "preview-title" }, "Preview"),
        previewBody,
      ),
    ),
    formError,
    h("button", { type: "submit", class: "btn btn-primary" }, "Create schedule"),
  );
  previewBody.append(words);

  form.addEventListener("input", (event) => {
    if (event.target === kind || event.target === preset) syncFields();
    if (![name, action, queue, payload, paused].includes(event.target)) schedulePreview();
  });
  form.addEventListener("change", (event) => {
    if (event.target === kind || event.target === preset) {
      syncFields();
      schedulePreview();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.replaceChildren();
    payload.removeAttribute("aria-invalid");
    let payloadValue;
    try {
      payloadValue = payload.value.trim() ? JSON.parse(payload.value) : {};
    } catch (error) {
      payload.setAttribute("aria-invalid", "true");
      formError.replaceChildren(h("p", {}, `Payload is not valid JSON: ${error.message}`));
      payload.focus();
      return;
    }
    const body = {
      name: name.value.trim(),
      ...rule(),
      paused: paused.checked,
      task: {
        action: action.value.trim(),
        queue: queue.value.trim() || "default",
        payload: payloadValue,
      },
    };
    const submit = form.querySelector("button[type=submit]");
    const result = await runAction(
      submit,
      formError,
      () => ctx.api("POST", "/v1/schedules", { body }),
      {
        success: (created) => `Schedule ${created.name} created.`,
        needs: "admin",
      },
    );
    if (result.ok) {
      name.value = "";
      await reloadList();
      return;
    }
    const fields = result.error?.fields ?? [];
    if (fields.length) {
      formError.replaceChildren(
        h("p", {}, "The schedule was not created:"),
        h(
          "ul",
          {},
          fields.map((f) => h("li", {}, `${f.field}: ${f.message}`)),
        ),
      );
    }
  });

  syncFields();
  schedulePreview();
  return form;
}

export async function render(ctx) {
  ctx.title("Schedules");
  const list = h("div", { class: "results", "aria-busy": "true" });
  add(ctx.main, h("div", { class: "page-head" }, h("h1", {}, "Schedules")), list);
  let reload = async () => {};
  try {
    reload = await listSection(ctx, list);
  } catch (error) {
    if (error?.name === "AbortError" || error?.status === 401) throw error;
    list.replaceChildren(errorBox(error, "Schedules could not be listed"));
  }
  if (ctx.can("admin")) {
    add(
      ctx.main,
      h(
        "section",
        { class: "panel" },
        createForm(ctx, () => reload()),
      ),
    );
  } else {
    add(
      ctx.main,
      h(
        "p",
        { class: "note", id: "readonly-note" },
        `Your token's role (${ctx.session.role}) can look at schedules; creating, pausing and `,
        "resuming them needs the admin role.",
      ),
    );
  }
}
