// Every call the Studio makes goes through this module. API calls use the public REST API
// (/v1beta/...) with a short-lived OAuth access token as Bearer, obtained from the Studio's
// session endpoint (the session itself is an HttpOnly cookie the page's code never sees).

const API = "/v1beta";
let token = null;        // {value, expiresAt} or null when the server runs without auth
let user = null;
let authEnabled = true;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.rpcStatus = err.status || "";
    this.details = err.details || [];
    // The structured parts a page words itself, instead of reading the message's text:
    // google.rpc.ErrorInfo's reason and metadata, google.rpc.BadRequest's field violations.
    const info = this.details.find((d) => String(d["@type"] || "").endsWith("google.rpc.ErrorInfo")) || {};
    this.reason = info.reason || "";
    this.metadata = info.metadata || {};
    this.violations = this.details.flatMap((d) => d.fieldViolations || []);
  }
}

/** Called when the session ends (expired or signed out elsewhere). */
export function setSignedOutHandler(fn) { onSignedOut = fn; }
export function currentUser() { return user; }
export function isAuthEnabled() { return authEnabled; }

async function studio(method, path, body) {
  const res = await fetch(`/studio/${path}`, {
    method,
    credentials: "same-origin",
    // The custom header cannot be sent cross-site without CORS: a second CSRF guard
    // beside the SameSite=Strict cookie.
    headers: { "Content-Type": "application/json", "X-Tunelab-Studio": "1" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : {};
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** The Studio's own endpoints (session-cookie authenticated), e.g. API keys. */

function remember(s) {
  user = s.user || null;
  authEnabled = s.authEnabled !== false;
  token = s.accessToken
    ? { value: s.accessToken, expiresAt: Date.now() + 1000 * Math.max(10, (s.expiresIn || 60) - 15) }
    : null;
  return s;
}

/** The signed-in session, or null. */
export async function loadSession() {
  const s = remember(await studio("GET", "session"));
  return s.user ? s : null;
}

export async function signIn(username, password) {
  remember(await studio("POST", "login", { username, password }));
  return loadSession();
}

export async function signOut() {
  try { await studio("POST", "logout", {}); } finally { user = null; token = null; }
}

async function authHeaders() {
  if (!authEnabled) return {};
  if (!token || Date.now() > token.expiresAt) {
    const s = await loadSession();
    if (!s) { onSignedOut(); throw new ApiError(401, { error: { message: "Your session has ended; sign in again." } }); }
  }
  return token ? { Authorization: `Bearer ${token.value}` } : {};
}

async function send(method, path, { body, query, form, signal, root = false } = {}) {
  const url = new URL(root ? path : API + "/" + path.replace(/^\//, ""), location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  const headers = await authHeaders();
  let payload;
  if (form) payload = form;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  let res = await fetch(url, { method, headers, body: payload, signal });
  if (res.status === 401 && authEnabled) {  // the token may have been revoked: one retry
    token = null;
    res = await fetch(url, { method, headers: { ...headers, ...(await authHeaders()) }, body: payload, signal });
  }
  return res;
}

/** JSON call of the REST API; throws ApiError with Google's error message. */
export async function api(method, path, opts = {}) {
  const res = await send(method, path, opts);
  const text = await res.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { error: { message: text } }; }
  if (!res.ok) {
    if (res.status === 401) onSignedOut();
    throw new ApiError(res.status, data);
  }
  return data;
}

export const get = (path, query) => api("GET", path, { query });
export const post = (path, body, query) => api("POST", path, { body, query });
export const patch = (path, body, query) => api("PATCH", path, { body, query });
export const del = (path) => api("DELETE", path);
export const upload = (path, form) => api("POST", path, { form });
/** The server's reading of a dataset (POST /studio/datasets:preview, with the API's token, as
 *  an upload): every row, its problems and warnings. The Studio has no parser of its own. */
export const previewDataset = (form) => api("POST", "/studio/datasets:preview", { form, root: true });

/** Downloads a file the REST API answers with (e.g. an export): fetched with the page's
 *  token (a plain link could not send it), then saved under the name the server gives in
 *  Content-Disposition. Resolves {name, size}; throws ApiError with Google's message. */
export async function download(path, query) {
  const res = await send("GET", path, { query });
  if (!res.ok) {
    let data = {};
    try { data = await res.json(); } catch { /* not JSON */ }
    if (res.status === 401) onSignedOut();
    throw new ApiError(res.status, data);
  }
  const blob = await res.blob();
  const m = /filename="?([^";]+)"?/.exec(res.headers.get("Content-Disposition") || "");
  const name = m ? m[1] : path.split("/").pop().replace(/[^\w.-]+/g, "-");
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { name, size: blob.size };
}

/** Changes the signed-in user's password; the session stays signed in. */
export async function changePassword(currentPassword, newPassword) {
  await api("POST", "account:changePassword", { body: { currentPassword, newPassword } });
  if (user) user.mustChangePassword = false;
}

/** All pages of a list call, concatenated. */
export async function listAll(path, field, query = {}) {
  const out = [];
  let pageToken;
  do {
    const page = await get(path, { ...query, pageSize: 100, pageToken });
    out.push(...(page[field] || []));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/** Stream generateContent as server-sent events; onText gets each chunk's text. */
export async function streamGenerate(model, body, onText, signal, onEvent = () => {}) {
  const res = await send("POST", `${model}:streamGenerateContent`, { body, query: { alt: "sse" }, signal });
  if (!res.ok) {
    let data = {};
    try { data = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, data);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data) continue;
      const chunk = JSON.parse(data);
      last = chunk;
      onEvent(chunk);
      const text = (chunk.candidates?.[0]?.content?.parts || []).map((p) => p.text || "").join("");
      if (text) onText(text);
    }
  }
  return last;
}
