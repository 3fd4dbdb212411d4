// The JSON API, as the dashboard uses it: bearer token from session storage, problem details
// turned into readable messages, 401 reported to the app (which shows the sign-in form).

const TOKEN_KEY = "scheduler-daemon.token";

export const ROLE_RANK = { read: 1, write: 2, admin: 3 };

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage unavailable: nothing was kept
  }
}

export class ApiError extends Error {
  constructor(status, problem, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }

  /** The problem's per-field errors: [{field, message}]. */
  get fields() {
    return Array.isArray(this.problem?.errors) ? this.problem.errors : [];
  }
}

let unauthorized = () => {};
let forbidden = () => {};

/** Called with the ApiError of every 401 (unless the call passed `auth: false`). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** Called with the ApiError of every 403: the token's role may have changed meanwhile. */
export function onForbidden(handler) {
  forbidden = handler;
}

function problemMessage(status, problem) {
  const detail = problem && typeof problem.detail === "string" ? problem.detail : "";
  const title = problem && typeof problem.title === "string" ? problem.title : "";
  if (status === 403) {
    return `Your token's role cannot do this${detail ? ` (${detail})` : ""}.`;
  }
  if (status === 401) return "Sign in with a valid token.";
  if (status === 422 && problem && Array.isArray(problem.errors) && problem.errors.length) {
    return problem.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
  }
  if (detail) return title ? `${title}: ${detail}` : detail;
  if (title) return `${title} (HTTP ${status})`;
  return `The daemon answered HTTP ${status}.`;
}

/**
 * Call the API. `query` values that are empty are left out (arrays repeat the key); `body` is
 * sent as JSON. Resolves to the parsed JSON (null when there is no body); rejects with an
 * ApiError, or with the fetch's AbortError when `signal` aborted it.
 */
export async function api(method, path, { query, body, signal, auth = true } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) {
      url.searchParams.append(key, String(one));
    }
  }
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: payload,
      signal,
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new ApiError(0, null, "The daemon did not answer: is it running?");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data, problemMessage(response.status, data));
    if (response.status === 401 && auth) unauthorized(error);
    if (response.status === 403) forbidden(error);
    throw error;
  }
  return data;
}
