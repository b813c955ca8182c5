// The HTTP/JSON API, as the console calls it: JSON bodies in protobuf's
// canonical mapping, errors as google.rpc.Status. Requests carry the session
// cookie (same origin) and, when they change something, the CSRF token.

const BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest";
const CSRF_HEADER = "X-ZBrain-CSRF";
const CSRF_COOKIE = "zbrain_csrf";

/** An error answered by the server (or the network), with what a person can act on. */
export class ApiError extends Error {
  /**
   * @param {number} httpStatus 0 when the server could not be reached.
   * @param {string} code the google.rpc code name, e.g. "INVALID_ARGUMENT".
   * @param {string} message the server's message.
   * @param {{field: string, description: string}[]} violations bad fields, if any.
   */
  constructor(httpStatus, code, message, violations = []) {
    super(message);
    this.httpStatus = httpStatus;
    this.code = code;
    this.violations = violations;
  }

  /** True when the caller must sign in first. */
  get unauthenticated() {
    return this.httpStatus === 401;
  }
}

const CODE_NAMES = {
  3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED",
  8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 11: "OUT_OF_RANGE", 14: "UNAVAILABLE",
  16: "UNAUTHENTICATED",
};

async function errorFrom(response) {
  let status = {};
  try {
    status = await response.json();
  } catch {
    // Not JSON (a proxy's page, say): the HTTP status alone must do.
  }
  const violations = [];
  for (const detail of status.details || []) {
    if (detail["@type"] === BAD_REQUEST) violations.push(...(detail.fieldViolations || []));
  }
  const code = typeof status.code === "number" ? CODE_NAMES[status.code] || String(status.code) : "";
  const message = status.message || `${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, code, message, violations);
}

/** The CSRF token: the session's readable cookie (double submit). */
function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(value.join("="));
  }
  return "";
}

/**
 * Call the API. `query` values that are arrays are repeated (states=A&states=B);
 * undefined, null and "" are left out. Answers the parsed JSON body.
 */
export async function call(method, path, { query, body, signal, quiet } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, item);
    }
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    const token = csrfToken();
    if (token) headers[CSRF_HEADER] = token;
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "UNAVAILABLE", "The server cannot be reached; is it running?");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (error.unauthenticated && !quiet) window.dispatchEvent(new CustomEvent("zbrain:signed-out"));
    throw error;
  }
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

// -- jobs -----------------------------------------------------------------------------

/** One page of jobs: {jobs, nextPageToken}. `filters` as ListRequest's fields. */
export function listJobs(filters, signal) {
  const query = {
    org_id: filters.orgId,
    states: filters.states,
    order: filters.order,
    page_size: filters.pageSize,
    page_token: filters.pageToken,
    create_time_after: filters.createdAfter,
    create_time_before: filters.createdBefore,
    unmatched: filters.unmatched ? "true" : undefined,
  };
  for (const [key, value] of Object.entries(filters.labels || {})) query[`labels[${key}]`] = value;
  return call("GET", "/v1/jobs", { query, signal });
}

export async function getJob(id, signal) {
  return (await call("GET", `/v1/jobs/${encodeURIComponent(id)}`, { signal })).job;
}

/**
 * A fresh idempotency key for one Submit (a UUID v4). Made from
 * getRandomValues because crypto.randomUUID exists only on HTTPS or loopback
 * pages, and a console may be served over plain HTTP elsewhere.
 */
export function newRequestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Submit a job once: a retried click or request with the same key gets the same job. */
export async function submitJob(spec, requestId = newRequestId()) {
  return (await call("POST", "/v1/jobs", { body: { job: spec, requestId } })).job;
}

export function cancelJob(id) {
  return call("POST", `/v1/jobs/${encodeURIComponent(id)}:cancel`, { body: {} });
}

export async function rerunJob(id) {
  return (await call("POST", `/v1/jobs/${encodeURIComponent(id)}:rerun`, { body: {} })).job;
}

/** The download address of an artifact (the session cookie authorises it). */
export function artifactUrl(id, name) {
  const path = name.split("/").map(encodeURIComponent).join("/");
  return `/v1/jobs/${encodeURIComponent(id)}/artifacts/${path}`;
}

// -- workers --------------------------------------------------------------------------

export function listWorkers(query, signal) {
  return call("GET", "/v1/workers", {
    query: { org_id: query.orgId, page_size: query.pageSize, page_token: query.pageToken },
    signal,
  });
}

// -- orgs -----------------------------------------------------------------------------

function orgPath(orgId) {
  return `/v1/orgs/${encodeURIComponent(orgId)}`;
}

/** An org's settings (OrgSettings: limits, quotas with usage, pause). */
export async function getOrgSettings(orgId, signal) {
  return (await call("GET", `${orgPath(orgId)}/settings`, { signal })).settings;
}

/** Set the limits given (0 removes the org's own); admins only. */
export async function updateOrgSettings(orgId, changes) {
  return (await call("PATCH", `${orgPath(orgId)}/settings`, { body: changes })).settings;
}

/** Pause the org, or the jobs matching `labels` in it; admins only. */
export async function pauseOrg(orgId, labels) {
  const body = labels && Object.keys(labels).length ? { selector: { labels } } : {};
  return (await call("POST", `${orgPath(orgId)}:pause`, { body })).settings;
}

/** Lift the org's pause, or one selector's; admins only. */
export async function resumeOrg(orgId, labels) {
  const body = labels && Object.keys(labels).length ? { selector: { labels } } : {};
  return (await call("POST", `${orgPath(orgId)}:resume`, { body })).settings;
}

// -- sessions -------------------------------------------------------------------------

/** Exchange a token for a session cookie; answers the session (its org and role). */
export async function signIn(token) {
  const session = await call("POST", "/v1/session", { body: { token } });
  // Who signed in (never the token), so a reloaded page can still say it.
  sessionStorage.setItem("zbrain.session", JSON.stringify(session));
  return session;
}

/** End the session at once. */
export async function signOut() {
  await call("DELETE", "/v1/session");
  sessionStorage.removeItem("zbrain.session");
}

/**
 * This browser's session: {authRequired, signedIn, tokenId, orgId?, role?}.
 * The org and role are remembered from signing in when the answer lacks them.
 */
export async function currentSession() {
  const session = await call("GET", "/v1/session", { quiet: true });
  let remembered = {};
  try {
    remembered = JSON.parse(sessionStorage.getItem("zbrain.session") || "{}");
  } catch {
    remembered = {};
  }
  if (session.signedIn && remembered.tokenId === session.tokenId) return { ...remembered, ...session };
  return session;
}

// -- tokens (admins) ------------------------------------------------------------------

export async function listTokens(orgId, signal) {
  return (await call("GET", "/v1/tokens", { query: { org_id: orgId }, signal })).tokens || [];
}

/** A new token: {token, secret}; the secret is shown once and kept nowhere. */
export function createToken(orgId, role, description) {
  return call("POST", "/v1/tokens", { body: { orgId, role, description } });
}

export function revokeToken(id) {
  return call("POST", `/v1/tokens/${encodeURIComponent(id)}:revoke`, { body: {} });
}
