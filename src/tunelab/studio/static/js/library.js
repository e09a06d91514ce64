// My Library: every tuned model the user can see, with live progress for running jobs.
import { get, listAll } from "./api.js";
import { html, raw, render, timeAgo, modelId, displayState, badge, progressText, esc, within } from "./util.js";

const STATES = ["TUNING", "QUEUED", "ACTIVE", "CANCELLED", "FAILED"];

export async function show(main) {
  const [$, $$] = within(main);
  document.title = "My Library · tunelab Studio";
  const params = new URLSearchParams(sessionStorage.getItem("library-filters") || "");
  render(main, html`
    <div class="page-head">
      <div><h1>My Library</h1><p class="sub">Your tuned models and the ones shared with you.</p></div>
      <a class="btn" href="#/new">+ New tuned model</a>
    </div>
    <section class="panel">
      <div class="filters" role="search">
        <input type="search" class="search" id="f-text" placeholder="Search name or description" aria-label="Search name or description" value="${params.get("q") || ""}">
        <select id="f-state" aria-label="Filter by state">
          <option value="">All states</option>
          ${STATES.map((s) => raw(`<option value="${s}">${s[0] + s.slice(1).toLowerCase()}</option>`))}
        </select>
        <select id="f-base" aria-label="Filter by base model"><option value="">All base models</option></select>
      </div>
      <div id="models" aria-live="polite"><p class="muted"><span class="spinner"></span> Loading…</p></div>
    </section>`);
  let models = [];
  const ops = new Map();   // model name → latest operation
  let timer = null;
  let stopped = false;

  const bases = await listAll("models", "models").catch(() => []);
  $("#f-base").insertAdjacentHTML("beforeend",
    bases.map((b) => `<option value="${esc(b.name)}">${esc(b.displayName || b.name)}</option>`).join(""));
  $("#f-state").value = params.get("state") || "";
  $("#f-base").value = params.get("base") || "";

  async function refresh() {
    models = await listAll("tunedModels", "tunedModels");
    await Promise.all(models.filter((m) => m.state === "CREATING" || !ops.has(m.name)).map(async (m) => {
      try {
        const list = await get(`${m.name}/operations`, { pageSize: 1 });
        if (list.operations?.length) ops.set(m.name, list.operations[0]);
      } catch { /* shared models: operations may be hidden */ }
    }));
    draw();
    clearTimeout(timer);
    if (!stopped && models.some((m) => m.state === "CREATING")) timer = setTimeout(tick, 1500);
  }
  const tick = () => refresh().catch(() => { if (!stopped) timer = setTimeout(tick, 4000); });

  function draw() {
    const q = $("#f-text").value.trim().toLowerCase();
    const st = $("#f-state").value;
    const base = $("#f-base").value;
    sessionStorage.setItem("library-filters", new URLSearchParams({ q, state: st, base }).toString());
    const rows = models.filter((m) => {
      const state = displayState(m, ops.get(m.name));
      if (st && state !== st) return false;
      if (base && m.baseModel !== base) return false;
      if (q && !`${m.displayName || ""} ${m.description || ""} ${m.name}`.toLowerCase().includes(q)) return false;
      return true;
    });
    const box = $("#models");
    if (!box) return;
    if (!models.length) {
      render(box, html`<div class="empty"><p>No tuned models yet.</p><a class="btn" href="#/new">Tune your first model</a></div>`);
      return;
    }
    if (!rows.length) { render(box, html`<div class="empty">No model matches these filters.</div>`); return; }
    render(box, html`
      <table class="list">
        <thead><tr><th>Model</th><th>State</th><th>Progress</th><th>Base model</th><th>Created</th></tr></thead>
        <tbody>${rows.map((m) => row(m, ops.get(m.name)))}</tbody>
      </table>`);
  }

  function row(m, op) {
    const state = displayState(m, op);
    const meta = op?.metadata || {};
    const pct = m.state === "CREATING" ? meta.completedPercent || 0 : (state === "ACTIVE" && !m.stateMessage ? 100 : meta.completedPercent || 0);
    const id = modelId(m.name);
    return html`<tr data-model="${id}">
      <td><a class="model-link" href="#/models/${id}">${m.displayName || id}</a><span class="model-id">${m.name}</span></td>
      <td data-label="State">${badge(state)}</td>
      <td class="prog-cell" data-label="Progress">
        <div class="progress" role="progressbar" aria-label="Tuning progress of ${m.displayName || id}" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${Math.round(pct)}"><div style="width:${pct}%"></div></div>
        <span class="small muted">${op ? progressText(op) : ""}</span></td>
      <td data-label="Base model" class="small">${m.baseModel.replace(/^models\//, "")}</td>
      <td data-label="Created" class="small muted" title="${m.createTime}">${timeAgo(m.createTime)}</td>
    </tr>`;
  }

  for (const id of ["#f-text", "#f-state", "#f-base"]) $(id).addEventListener("input", draw);
  await refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
