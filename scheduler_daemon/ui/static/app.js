// The dashboard: History API routing under /ui, sign-in with a bearer token, one module per page.

import {
  ApiError,
  ROLE_RANK,
  api,
  clearToken,
  getToken,
  onForbidden,
  onUnauthorized,
  setToken,
} from "./api.js";
import { announce, errorBox, h, localZone } from "./dom.js";
import * as deadLetters from "./pages/dead-letters.js";
import * as overview from "./pages/overview.js";
import * as queues from "./pages/queues.js";
import * as schedules from "./pages/schedules.js";
import * as task from "./pages/task.js";
import * as tasks from "./pages/tasks.js";

const ROUTES = [
  { pattern: /^\/ui$/, nav: "overview", page: overview },
  { pattern: /^\/ui\/tasks$/, nav: "tasks", page: tasks },
  { pattern: /^\/ui\/tasks\/([^/]+)$/, nav: "tasks", page: task },
  { pattern: /^\/ui\/schedules$/, nav: "schedules", page: schedules },
  { pattern: /^\/ui\/dead-letters$/, nav: "dead-letters", page: deadLetters },
  { pattern: /^\/ui\/queues$/, nav: "queues", page: queues },
];

let session = null; // {anonymous, name, role} of the token in use
let current = null; // the page on screen: {controller, timers}

const main = () => document.getElementById("main");

function stopPage() {
  if (!current) return;
  current.controller.abort();
  for (const timer of current.timers) clearInterval(timer);
  current = null;
}

function navigate(url, { replace = false, state = null } = {}) {
  if (replace) window.history.replaceState(state, "", url);
  else window.history.pushState(state, "", url);
  route();
}

function can(role) {
  return Boolean(session) && ROLE_RANK[session.role] >= ROLE_RANK[role];
}

function markNav(name) {
  for (const a of document.querySelectorAll(".site-header nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route({ focus = true } = {}) {
  stopPage();
  if (!session) {
    showSignIn();
    return;
  }
  const path = window.location.pathname.replace(/\/+$/, "") || "/ui";
  const controller = new AbortController();
  const timers = [];
  current = { controller, timers };
  const target = main();
  target.replaceChildren();
  let match = null;
  let found = null;
  for (const candidate of ROUTES) {
    match = candidate.pattern.exec(path);
    if (match) {
      found = candidate;
      break;
    }
  }
  markNav(found?.nav ?? "");
  const ctx = {
    main: target,
    params: match ? match.slice(1).map(decodeURIComponent) : [],
    query: new URLSearchParams(window.location.search),
    signal: controller.signal,
    session,
    can,
    navigate,
    api: (method, apiPath, options = {}) =>
      api(method, apiPath, { ...options, signal: controller.signal }),
    every(ms, fn) {
      const timer = setInterval(() => {
        if (!controller.signal.aborted) fn();
      }, ms);
      timers.push(timer);
      return timer;
    },
    title(text) {
      document.title = `${text} · scheduler-daemon`;
    },
  };
  if (!found) {
    ctx.title("Not found");
    target.append(
      h("h1", { tabindex: "-1" }, "Page not found"),
      h(
        "p",
        {},
        "There is no dashboard page at this address. ",
        h("a", { href: "/ui" }, "Go to the overview"),
        ".",
      ),
    );
  } else {
    try {
      await found.page.render(ctx);
    } catch (error) {
      if (controller.signal.aborted || error?.name === "AbortError") return;
      if (error instanceof ApiError && error.status === 401) return; // sign-in form shown
      target.append(errorBox(error, "This page could not be loaded"));
    }
  }
  if (focus && !controller.signal.aborted) {
    const heading = target.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: false });
    }
  }
}

function onLinkClick(event) {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const anchor = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
  const url = new URL(anchor.href, window.location.href);
  if (url.origin !== window.location.origin) return;
  if (!/^\/ui(\/|$)/.test(url.pathname) || /^\/ui\/(static|api)\//.test(url.pathname)) return;
  event.preventDefault();
  if (url.pathname === window.location.pathname && url.search === window.location.search) {
    route();
    return;
  }
  navigate(url.pathname + url.search + url.hash);
}

// -- who is signed in ----------------------------------------------------------------------

async function loadSession() {
  try {
    session = await api("GET", "/ui/api/whoami", { auth: false });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      session = null;
      return false;
    }
    throw error;
  }
  return true;
}

function renderIdentity() {
  const box = document.getElementById("identity");
  box.replaceChildren();
  if (!session) return;
  if (session.anonymous) {
    box.append(
      h(
        "span",
        { class: "who", title: "No tokens are configured: the API listens on loopback only." },
        "No sign-in needed (no tokens configured)",
      ),
    );
    return;
  }
  box.append(
    h(
      "span",
      { class: "who" },
      "Signed in as ",
      h("strong", {}, session.name),
      ` (role ${session.role})`,
    ),
    h(
      "button",
      {
        type: "button",
        class: "btn btn-small",
        onclick: () => {
          clearToken();
          session = null;
          renderIdentity();
          showSignIn("You are signed out.");
          announce("Signed out.");
        },
      },
      "Sign out",
    ),
  );
}

function showSignIn(message = "") {
  stopPage();
  markNav("");
  document.title = "Sign in · scheduler-daemon";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-hint token-error",
  });
  const error = h("p", { class: "form-error", id: "token-error", role: "alert" }, message);
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", tabindex: "-1" }, "Sign in"),
    h(
      "p",
      { id: "token-hint" },
      "This daemon needs an API token. Ask its operator for one with the role you need: read ",
      "to look, write to cancel, run and retry tasks and pause queues, admin for schedules and ",
      "dead letters. The token is kept in this browser tab only, until you sign out or close it.",
    ),
    h("div", { class: "field" }, h("label", { for: "token" }, "API token"), input),
    error,
    h("button", { type: "submit", class: "btn btn-primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter a token.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    setToken(token);
    try {
      if (await loadSession()) {
        input.value = "";
        renderIdentity();
        announce(`Signed in as ${session.name} (role ${session.role}).`);
        route();
        return;
      }
      clearToken();
      error.textContent = "That token was not accepted. Check it and try again.";
    } catch (failure) {
      clearToken();
      error.textContent = failure.message;
    }
    input.setAttribute("aria-invalid", "true");
    input.focus();
  });
  main().replaceChildren(form);
  input.focus();
}

async function boot() {
  const footer = document.getElementById("zone-note");
  if (footer) footer.textContent = `Times are shown in your browser's time zone, ${localZone()}.`;
  onUnauthorized(() => {
    const had = Boolean(getToken());
    clearToken();
    session = null;
    renderIdentity();
    showSignIn(had ? "Your token is no longer accepted. Sign in again." : "");
  });
  onForbidden(async () => {
    // The operator may have changed the token's role (a reload): show the role now in force;
    // the next page drawn leaves out what it no longer allows.
    try {
      if (await loadSession()) renderIdentity();
    } catch {
      // keep what is shown
    }
  });
  document.addEventListener("click", onLinkClick);
  window.addEventListener("popstate", () => route());
  try {
    if (await loadSession()) {
      renderIdentity();
      await route({ focus: false });
    } else {
      const had = Boolean(getToken());
      clearToken();
      showSignIn(had ? "Your token is no longer accepted. Sign in again." : "");
    }
  } catch (error) {
    main().replaceChildren(
      h("h1", {}, "scheduler-daemon"),
      errorBox(error, "The dashboard could not reach the daemon"),
      h(
        "button",
        { type: "button", class: "btn", onclick: () => window.location.reload() },
        "Try again",
      ),
    );
  }
}

boot();
