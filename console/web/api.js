// api.js: the console's only way to the control plane. Every call carries
// the user's bearer token; the API decides what the token may do.

const KEY = "pennon.token";

// The token lives in sessionStorage: it survives a reload of this tab, is
// gone when the tab closes, is never put in a URL and never sent anywhere
// but this origin's /api/v1.
export function token() {
  try { return sessionStorage.getItem(KEY) || ""; } catch { return ""; }
}
export function setToken(t) {
  try { t ? sessionStorage.setItem(KEY, t) : sessionStorage.removeItem(KEY); } catch { /* private mode: memory only */ }
  memory = t;
}
let memory = "";
function current() { return token() || memory; }

// ApiError carries the API's error body: code, message, problems (with JSON
// paths) and conflicts (409).
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "";
    this.problems = e.problems || [];
    this.conflicts = e.conflicts || [];
  }
}

// call sends one request and returns {status, body}; any status >= 400 is
// thrown as ApiError. onUnauthorized runs on 401 (token revoked, expired).
export let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

export async function call(method, path, body, opts = {}) {
  const headers = { "Accept": "application/json" };
  const t = opts.token ?? current();
  if (t) headers["Authorization"] = "Bearer " + t;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = opts.contentType || "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (err) {
    throw new ApiError(0, { error: { code: "network", message: "the control plane did not answer (" + err.message + ")" } });
  }
  const text = await resp.text();
  let data = text;
  if ((resp.headers.get("Content-Type") || "").includes("json")) {
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  }
  if (resp.status >= 400) {
    if (resp.status === 401 && !opts.token) onUnauthorized();
    throw new ApiError(resp.status, data);
  }
  return { status: resp.status, body: data };
}

export const get = (p) => call("GET", p).then((r) => r.body);
export const post = (p, b) => call("POST", p, b);
export const put = (p, b) => call("PUT", p, b);

export function envPath(env, rest = "") {
  return "/api/v1/envs/" + encodeURIComponent(env) + rest;
}
