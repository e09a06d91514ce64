// Small DOM and formatting helpers shared by the pages.

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESC[c]);

/** Tagged template that escapes every interpolated value unless it is raw(...). */
export function html(strings, ...values) {
  let out = "";
  strings.forEach((s, i) => {
    out += s;
    if (i < values.length) {
      const v = values[i];
      if (v && v.__raw !== undefined) out += v.__raw;
      else if (Array.isArray(v)) out += v.map((x) => (x && x.__raw !== undefined ? x.__raw : esc(x))).join("");
      else out += esc(v);
    }
  });
  return { __raw: out };
}
export const raw = (s) => ({ __raw: String(s) });

/** Replaces el's content; a no-op when el is gone (an async update after leaving a page). */
export function render(el, content) { if (el) el.innerHTML = content.__raw ?? esc(content); }
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
/** $ and $$ that look only inside one page's view, so a page that is still loading after
 *  the user navigated on can never find (and change) the newer page's elements. */
export const within = (view) => [(sel, root = view) => $(sel, root), (sel, root = view) => $$(sel, root)];

let toastTimer;
export function toast(msg) {
  const t = $("#toast");
  t.textContent = msg;
  t.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("show"), 3200);
}

/** A modal confirmation; resolves true when the user confirms. Both buttons say what they
 *  do ("Cancel tuning" / "Keep tuning"), so neither can be misread. */
export function confirmDialog(title, body, okLabel, backLabel) {
  const d = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-body").textContent = body;
  $("#confirm-yes").textContent = okLabel;
  $("#confirm-no").textContent = backLabel;
  d.returnValue = "";
  d.showModal();
  $("#confirm-no").focus();
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
  });
}

// A page with work that is not saved yet (the new-model page's rows) says so here; the router
// asks before any navigation throws it away.
let leaveGuard = null;
/** fn() → a sentence saying what would be lost, or null when nothing would. */
export function setLeaveGuard(fn) { leaveGuard = fn; }
export function leaveWarning() { return leaveGuard ? leaveGuard() : null; }

/** What went wrong with an action, in the Studio's words: the HTTP status and the error's
 *  structured reason decide, so no server wording (CLI commands, REST paths) reaches the page.
 *  ``what`` completes "Could not …", e.g. "delete the model". */
export function failure(e, what, role = "") {
  const could = `Could not ${what}`;
  if (!e || e.status === undefined) return `${could}: the server did not answer. Check your connection and try again.`;
  if (e.status === 404) return `${could}: this model no longer exists, or it is no longer shared with you. Go back to My Library.`;
  if (e.status === 403) return `${could}: ${role ? `your access to this model (${role.toLowerCase()}) does not allow it` : "you are not allowed to"}. Ask the model's owner.`;
  if (e.status === 401) return `${could}: your session has ended. Sign in again.`;
  if (e.status === 429 || e.status === 503) return `${could}: the server is busy. Try again in a minute.`;
  return `${could}: ${e.message}`;
}

export function timeAgo(iso) {
  if (!iso) return "";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function duration(sec) {
  if (!isFinite(sec) || sec < 0) return "";
  if (sec < 60) return `${Math.max(1, Math.round(sec))} s`;
  if (sec < 3600) return `${Math.round(sec / 60)} min`;
  return `${Math.floor(sec / 3600)} h ${Math.round((sec % 3600) / 60)} min`;
}

export const modelId = (name) => String(name || "").replace(/^tunedModels\//, "");

/** The state a person cares about: QUEUED / TUNING / ACTIVE / CANCELLED / FAILED. */
export function displayState(model, op) {
  if (model.state === "CREATING") return op?.metadata?.queuePosition ? "QUEUED" : "TUNING";
  if (model.cancelled === true) return "CANCELLED";  // the API's flag, not the message's words
  return model.state || "STATE_UNSPECIFIED";
}
export function badge(state) {
  const cls = state === "TUNING" ? "CREATING" : state;
  const label = { TUNING: "Tuning", QUEUED: "Queued", ACTIVE: "Active", CANCELLED: "Cancelled", FAILED: "Failed" }[state] || state;
  return html`<span class="badge ${cls}" data-state="${state}">${label}</span>`;
}

/** Seconds left, from the snapshots' compute times (null until two steps ran). */
export function eta(op) {
  const m = op?.metadata;
  const snaps = m?.snapshots || [];
  if (!m || snaps.length < 2 || op.done) return null;
  const t0 = new Date(snaps[0].computeTime).getTime();
  const t1 = new Date(snaps[snaps.length - 1].computeTime).getTime();
  const perStep = (t1 - t0) / 1000 / (snaps.length - 1);
  return perStep * ((m.totalSteps || 0) - (m.completedSteps || 0));
}

export function progressText(op) {
  const m = op?.metadata || {};
  const total = m.totalSteps || 0;
  const done = m.completedSteps || 0;
  if (m.queuePosition) return `Queued · position ${m.queuePosition}`;
  const left = eta(op);
  return `${done} / ${total} steps${left !== null && !op.done ? ` · about ${duration(left)} left` : ""}`;
}

export function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

export async function copyText(text) {
  try { await navigator.clipboard.writeText(text); toast("Copied to the clipboard"); }
  catch { toast("Select the text and copy it (the clipboard is not available here)"); }
}
