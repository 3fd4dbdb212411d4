// DOM helpers. Every piece of data reaches the page as a text node or an attribute value set
// through the DOM: nothing is ever parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function setAttributes(el, attrs) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace `el`'s children (null, undefined and false are left out, arrays flattened). */
export function fill(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
  return el;
}

/** Append to `el` (null, undefined and false are left out, arrays flattened). */
export function add(el, ...children) {
  appendChildren(el, children);
  return el;
}

/** An HTML element: h("a", {href: "/ui"}, "text", otherNode). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  appendChildren(el, children);
  return el;
}

/** An SVG element. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attrs);
  appendChildren(el, children);
  return el;
}

let idCounter = 0;

/** A document-unique id with a readable prefix. */
export function uid(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

// -- announcements ----------------------------------------------------------------------

let statusTimer = null;

/** Say something in the polite live region (and show it in the status bar). */
export function announce(message, kind = "info") {
  const region = document.getElementById("status");
  if (!region) return;
  region.textContent = message;
  region.dataset.kind = kind;
  region.classList.add("visible");
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => region.classList.remove("visible"), 10000);
}

/** An error shown in place of (or next to) content. */
export function errorBox(error, what = "") {
  const message = error instanceof Error ? error.message : String(error);
  return h("div", { class: "alert", role: "alert" }, what ? `${what}: ${message}` : message);
}

// -- numbers, times, durations ------------------------------------------------------------

const NUMBER = new Intl.NumberFormat();
const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function num(value) {
  return typeof value === "number" ? NUMBER.format(value) : "—";
}

/** "1 task", "3 tasks". */
export function plural(count, word) {
  return `${NUMBER.format(count)} ${word}${count === 1 ? "" : "s"}`;
}

export function localZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

export function clock(iso) {
  return CLOCK.format(new Date(iso));
}

export function relative(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  const units = [
    ["second", 60],
    ["minute", 3600],
    ["hour", 86400],
    ["day", 86400 * 30],
    ["month", 86400 * 365],
  ];
  let divisor = 1;
  for (const [unit, limit] of units) {
    if (abs < limit) return RELATIVE.format(Math.round(seconds / divisor), unit);
    divisor = limit;
  }
  return RELATIVE.format(Math.round(seconds / (86400 * 365)), "year");
}

/** <time> in the browser's zone, the ISO value in datetime and title; "—" for none. */
export function time(iso, { withRelative = false } = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return document.createTextNode(String(iso));
  const el = h("time", { datetime: iso, title: iso }, DATE_TIME.format(date));
  if (!withRelative) return el;
  return h("span", { class: "when" }, el, h("span", { class: "muted small" }, relative(iso)));
}

/** "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min", "3 d 4 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

// -- building blocks ----------------------------------------------------------------------

export const STATUSES = ["waiting", "scheduled", "running", "completed", "failed", "cancelled"];

export function badge(status) {
  return h("span", { class: ["badge", `badge-${status}`] }, status);
}

/** A link the app's router follows without reloading the page. */
export function link(href, ...children) {
  return h("a", { href }, ...children);
}

export function taskLink(id) {
  return h(
    "a",
    { href: `/ui/tasks/${encodeURIComponent(id)}`, class: "mono", title: String(id) },
    h("span", { "aria-hidden": "true" }, shortId(id)),
    h("span", { class: "visually-hidden" }, `Task ${id}`),
  );
}

/**
 * A table in a horizontally scrolling region. `columns`: [{label, className}] (or `head`: the
 * <thead> rows, for grouped headers); `rows`: <tr>s. The first cell of each row may be a
 * <th scope="row">.
 */
export function table({
  caption,
  columns,
  rows,
  head = null,
  captionHidden = false,
  className = "",
}) {
  const wrap = h(
    "div",
    { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" },
    h(
      "table",
      { class: className },
      h("caption", { class: captionHidden ? "visually-hidden" : "" }, caption),
      h(
        "thead",
        {},
        head ??
          h(
            "tr",
            {},
            columns.map((c) => h("th", { scope: "col", class: c.className ?? "" }, c.label)),
          ),
      ),
      h("tbody", {}, rows),
    ),
  );
  return wrap;
}

export function td(content, className = "") {
  return h("td", { class: className }, content);
}

export function field(label, control, hint = "") {
  const id = control.id || uid("field");
  control.id = id;
  const hintEl = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) {
    const describedBy = control.getAttribute("aria-describedby");
    control.setAttribute("aria-describedby", [describedBy, hintEl.id].filter(Boolean).join(" "));
  }
  // The hint between label and control, so that controls in a row line up at the bottom.
  return h("div", { class: "field" }, h("label", { for: id }, label), hintEl, control);
}

export function select(options, value, attrs = {}) {
  const el = h(
    "select",
    attrs,
    options.map(([optionValue, label]) => h("option", { value: optionValue }, label)),
  );
  el.value = value ?? "";
  return el;
}

/**
 * Filters in a disclosure: open on a wide screen, or when a filter is in use; on a phone the
 * results come first.
 */
export function filterBox(form, active) {
  const wide = window.matchMedia("(min-width: 641px)").matches;
  return h(
    "details",
    { class: "filter-box", open: wide || active },
    h("summary", {}, active ? "Filters (in use)" : "Filters"),
    form,
  );
}

/** A checkbox that (re)runs `load` every `seconds` while checked; remembered per page. */
export function autoRefresh(ctx, key, load, seconds = 5) {
  const storageKey = `scheduler-daemon.refresh.${key}`;
  const box = h("input", { type: "checkbox", id: uid("refresh") });
  let timer = null;
  const stop = () => {
    if (timer !== null) clearInterval(timer);
    timer = null;
  };
  const start = () => {
    stop();
    timer = ctx.every(seconds * 1000, async () => {
      try {
        await load();
      } catch (error) {
        if (error?.name !== "AbortError") announce(`Refresh failed: ${error.message}`, "error");
      }
    });
  };
  try {
    box.checked = localStorage.getItem(storageKey) === "on";
  } catch {
    box.checked = false;
  }
  box.addEventListener("change", () => {
    try {
      localStorage.setItem(storageKey, box.checked ? "on" : "off");
    } catch {
      // not remembered
    }
    if (box.checked) {
      start();
      announce(`Auto-refresh on: every ${seconds} seconds.`);
    } else {
      stop();
      announce("Auto-refresh off.");
    }
  });
  if (box.checked) start();
  return h(
    "div",
    { class: "refresh" },
    box,
    h("label", { for: box.id }, `Auto-refresh every ${seconds} s`),
  );
}

/**
 * Run an action from a button: the button is busy meanwhile; a failure is written into
 * `messageEl` (next to the button) and announced. Resolves to {ok, value}.
 */
export async function runAction(button, messageEl, call, { success, needs } = {}) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  messageEl.textContent = "";
  messageEl.classList.remove("error");
  try {
    const value = await call();
    if (success) announce(typeof success === "function" ? success(value) : success);
    return { ok: true, value };
  } catch (error) {
    if (error?.name === "AbortError") return { ok: false, error };
    if (error?.status === 401) return { ok: false, error };
    let message = error.message;
    if (error?.status === 403) {
      message = `Your token's role cannot do this${needs ? `: it needs the ${needs} role` : ""}.`;
    }
    messageEl.textContent = message;
    messageEl.classList.add("error");
    announce(message, "error");
    return { ok: false, error };
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** The paragraph next to a group of action buttons where their failures show. */
export function actionMessage() {
  return h("p", { class: "action-msg", id: uid("action-msg") });
}

/**
 * Cursor paging. The cursors of the pages before this one travel in history.state, so
 * "Previous" returns to the exact page before (and Back does the same).
 */
export function pager(ctx, nextCursor, label) {
  const query = new URLSearchParams(ctx.query);
  const current = query.get("cursor") ?? "";
  const stack = Array.isArray(window.history.state?.cursors) ? window.history.state.cursors : [];
  const pageNumber = current ? (stack.length ? stack.length + 1 : null) : 1;
  const go = (cursor, cursors) => {
    const q = new URLSearchParams(ctx.query);
    if (cursor) q.set("cursor", cursor);
    else q.delete("cursor");
    const search = q.toString();
    ctx.navigate(`${window.location.pathname}${search ? `?${search}` : ""}`, {
      state: { cursors },
    });
  };
  const previous = h(
    "button",
    {
      type: "button",
      class: "btn",
      disabled: !current,
      onclick: () => {
        if (stack.length) go(stack[stack.length - 1], stack.slice(0, -1));
        else go("", []);
      },
    },
    "← Previous",
  );
  const next = h(
    "button",
    {
      type: "button",
      class: "btn",
      disabled: !nextCursor,
      onclick: () => go(nextCursor, [...stack, current]),
    },
    "Next →",
  );
  return h(
    "nav",
    { class: "pager", "aria-label": label },
    previous,
    h("span", { class: "muted" }, pageNumber ? `Page ${pageNumber}` : "Later page"),
    next,
  );
}
