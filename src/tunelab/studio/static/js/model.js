// The model page: live status, loss and validation curves, the per-epoch scores (with the base
// model's row and a few wrong answers), details with the reasons for the automatic settings,
// edit, share, download, cancel/delete, playground (tuned vs base, streamed) and code snippets.
// The page asks for the caller's own permission first and shows each control only to a role
// that may use it (READER: call it and compare it; WRITER: also edit, cancel, choose the epoch,
// share and download its weights; OWNER: also delete).

const RANK = { READER: 1, WRITER: 2, OWNER: 3 };
const ROLE_WORDS = { READER: "reader", WRITER: "writer", OWNER: "owner" };
import { get, post, patch, del, streamGenerate, download } from "./api.js";
import { html, render, toast, confirmDialog, timeAgo, displayState, badge, progressText, copyText, debounce, within, failure } from "./util.js";
import { lossChart } from "./chart.js";
import { fmtScore, metricName, otherScore } from "./scores.js";
import { snippets } from "./snippets.js";

export async function show(main, id) {
  const [$, $$] = within(main);
  const name = `tunedModels/${id}`;
  let model = await get(name);
  // GET …/permissions:mine (tunelab extension) answers for every role; the least role if a
  // server without it answers anything else, so no control is shown that would fail.
  const role = (await get(`${name}/permissions:mine`).catch(() => null))?.role || "READER";
  const may = (need) => RANK[role] >= RANK[need];
  let op = null;
  let epochs = null;
  let timer = null;
  let stopped = false;
  const streams = [];
  document.title = `${model.displayName || id} · tunelab Studio`;

  render(main, html`
    <div class="page-head">
      <div>
        <p class="sub small"><a href="#/library">My Library</a> ›</p>
        <h1 id="m-title"></h1>
        <p class="sub mono">${name}</p>
        <p class="sub small" id="m-role" data-role="${role}">Your access: ${ROLE_WORDS[role]}${role === "READER" ? " (you can call it; its owner can make you a writer to edit it)" : ""}</p>
      </div>
      <div class="row">
        <a class="btn ghost" id="compare" href="#/models/${id}/compare" hidden>Compare on test data</a>
        ${may("WRITER") ? html`<button type="button" class="btn ghost" id="cancel" hidden>Cancel tuning</button>` : ""}
        ${may("OWNER") ? html`<button type="button" class="btn ghost danger" id="delete">Delete</button>` : ""}
      </div>
    </div>
    <div class="notice bad" id="action-error" role="alert" hidden></div>
    <div id="created"></div>
    <section class="panel" aria-labelledby="status-h">
      <h2 id="status-h" class="row">Status <span id="m-badge"></span></h2>
      <div class="status-line">
        <div class="progress" role="progressbar" id="m-progress" aria-label="Tuning progress" aria-valuemin="0" aria-valuemax="100"><div></div></div>
        <span id="m-progress-text" class="small"></span>
      </div>
      <div id="m-message"></div>
    </section>
    <div class="grid2">
      <div>
        <section class="panel" aria-labelledby="loss-h">
          <h2 id="loss-h">Loss curve</h2>
          <div id="chart"></div>
          <p class="legend small" id="chart-legend" hidden><span class="key train"></span> training loss, each step
            <span class="key val"></span> validation loss, each epoch's end</p>
          <div id="advice"></div>
          <div id="wrong"></div>
        </section>
        <section class="panel" aria-labelledby="play-h">
          <h2 id="play-h">Playground</h2>
          <form id="play">
            <label class="field">Prompt <textarea name="prompt" rows="3" required placeholder="Type an input like the ones you tuned on"></textarea></label>
            <div class="gen-settings">
              <label class="field">Temperature <input type="number" name="temperature" min="0" max="2" step="0.1" placeholder="model default"></label>
              <label class="field">Max output tokens <input type="number" name="maxOutputTokens" min="1" max="2048" value="64"></label>
              <label class="field">Top-p <input type="number" name="topP" min="0" max="1" step="0.05" placeholder="model default"></label>
            </div>
            <div class="row"><button class="btn" type="submit" id="run">Run on both</button><button class="btn ghost" type="button" id="stop" hidden>Stop</button>
              <span class="hint" id="play-hint"></span></div>
          </form>
          <div class="notice warn" id="prompt-format" role="status" hidden></div>
          <div class="answers">
            <div class="answer" id="ans-tuned"><h3>Tuned · ${id}</h3><div class="text" aria-live="polite"></div></div>
            <div class="answer" id="ans-base"><h3>Base · ${model.baseModel.replace("models/", "")}</h3><div class="text" aria-live="polite"></div></div>
          </div>
        </section>
        <section class="panel" aria-labelledby="code-h">
          <h2 id="code-h">Get code</h2>
          <div class="tabs" role="tablist" id="code-tabs"></div>
          <div class="code-wrap"><pre class="code" id="code" tabindex="0"></pre><button type="button" class="btn ghost small" id="copy">Copy</button></div>
        </section>
      </div>
      <div>
        <section class="panel" aria-labelledby="det-h"><h2 id="det-h">Details</h2><dl class="kv" id="details"></dl>
          <div id="choices"></div></section>
        ${may("WRITER") ? html`<form class="panel" id="download" aria-labelledby="dl-h" hidden>
          <h2 id="dl-h">Download</h2>
          <p class="hint">Take the weights anywhere: the files carry the tokenizer, a chat template that
            prompts as tunelab does, and a model card.</p>
          <label class="field">Format <span class="hint">An adapter loads on the base model with PEFT; merged
            weights with transformers alone; GGUF with llama.cpp, Ollama or LM Studio.</span>
            <select name="format">
            <option value="peft">PEFT adapter (.tar.gz)</option>
            <option value="merged">Merged weights (.tar.gz)</option>
            <option value="gguf">GGUF f16 (.gguf)</option>
            <option value="gguf:q8_0">GGUF q8_0 (.gguf, half the size)</option></select></label>
          <label class="field">Weights <select name="epoch"></select></label>
          <button class="btn ghost" type="submit" id="dl-go">Download</button>
          <p class="hint" id="dl-status" role="status"></p>
          <div class="notice bad" id="dl-error" role="alert" hidden></div>
        </form>` : ""}
        ${may("WRITER") ? html`<form class="panel" id="edit" aria-labelledby="edit-h">
          <h2 id="edit-h">Edit</h2>
          <label class="field">Display name <input type="text" name="displayName" maxlength="40"></label>
          <label class="field">Description <textarea name="description" rows="2"></textarea></label>
          <label class="field">Default temperature <span class="hint">Used when a request does not set one (0 = always the most likely answer).</span>
            <input type="number" name="temperature" min="0" max="2" step="0.05"></label>
          <div class="notice bad" id="edit-error" hidden></div>
          <button class="btn" type="submit">Save</button>
        </form>
        <section class="panel" aria-labelledby="share-h">
          <h2 id="share-h">Share</h2>
          <form id="share">
            <label class="field">User (name or email) <input type="text" name="email" required autocomplete="off"></label>
            <label class="field">Role <select name="role"><option value="READER">Reader: can call it</option><option value="WRITER">Writer: can also edit and share</option></select></label>
            <div class="notice bad" id="share-error" role="alert" hidden></div>
            <button class="btn ghost" type="submit">Share</button>
          </form>
          <h3 id="perms-h">Who has access</h3>
          <ul id="perms" class="perms small" aria-labelledby="perms-h"></ul>
          <div class="notice bad" id="perms-error" role="alert" hidden></div>
        </section>` : ""}
      </div>
    </div>`);

  // -- status ---------------------------------------------------------------------------
  function drawStatus() {
    if (!$("#m-title")) return;
    const state = displayState(model, op);
    $("#m-title").textContent = model.displayName || id;
    render($("#m-badge"), badge(state));
    const m = op?.metadata || {};
    const pct = op ? (op.done && !op.error ? 100 : m.completedPercent || 0) : (model.state === "ACTIVE" ? 100 : 0);
    const bar = $("#m-progress");
    bar.firstElementChild.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    $("#m-progress-text").textContent = op ? `${progressText(op)} · ${Math.round(pct)}%` : "";
    if ($("#cancel")) $("#cancel").hidden = model.state !== "CREATING";
    const callable = model.state === "ACTIVE";
    $("#compare").hidden = !callable;
    if ($("#download")) { $("#download").hidden = !callable; fillDownload(); }
    if (!streams.some((c) => !c.signal.aborted && c.running)) $("#run").disabled = !callable;
    $("#play-hint").textContent = callable
      ? "The tuned model's answer streams next to the base model's for the same prompt."
      : model.state === "CREATING" ? "Available when tuning has finished." : "This model cannot be called: its tuning failed.";
    const msgs = [];
    if (model.stateMessage) msgs.push(html`<div class="notice ${state === "FAILED" ? "bad" : "warn"}">${model.stateMessage}</div>`);
    else if (state === "ACTIVE") msgs.push(html`<div class="notice ok">Tuning finished ${timeAgo(model.tuningTask?.completeTime)}. Try it in the playground below.</div>`);
    else if (state === "QUEUED") msgs.push(html`<div class="notice info">Waiting for a worker: position ${m.queuePosition} in the queue.</div>`);
    render($("#m-message"), html`${msgs}`);
    drawChart();
    drawDetails();
  }

  function drawChart() {
    const snaps = model.tuningTask?.snapshots || op?.metadata?.snapshots || [];
    const opSnaps = op?.metadata?.snapshots || [];
    const use = opSnaps.length > snaps.length ? opSnaps : snaps;
    // while tuning, the x axis spans the planned steps; afterwards the steps that ran (a
    // cancelled run never reaches the planned end)
    const planned = op?.metadata?.totalSteps || use.length;
    const total = model.state === "CREATING" ? planned : (use.length ? use[use.length - 1].step : planned);
    const box = $("#chart");
    if (!box) return;   // the page was left (a resize or poll finished afterwards)
    const spe = stepsPerEpoch();
    const validation = validationPoints(spe);
    const refit = epochs?.refit ? { from: epochs.refit.firstStep, label: `refit on all ${epochs.refit.examples}` } : null;
    box.replaceChildren(lossChart(use, { totalSteps: total, selectedEpoch: epochs?.selectedEpoch ?? null, stepsPerEpoch: spe, running: model.state === "CREATING", width: box.clientWidth, validation, refit }));
    box.dataset.points = String(use.length);
    box.dataset.validationPoints = String(validation.length);
    $("#chart-legend").hidden = !validation.length;
  }

  /** The validation scores: the operation's while tuning runs (the epochs scored so far),
   *  the tuned model's afterwards; null for a run without validation examples. */
  function evaluation() {
    const ev = model.state === "CREATING" ? op?.metadata?.evaluation || model.evaluation : model.evaluation || op?.metadata?.evaluation;
    return ev || null;
  }
  /** Validation loss at the end of each scored epoch, placed at that epoch's last step. */
  function validationPoints(spe) {
    const scored = (evaluation()?.epochs || []).filter((e) => typeof e.validationLoss === "number");
    const last = new Map((epochs?.epochs || []).map((e) => [e.epoch, e.lastStep]));
    return scored.map((e) => ({ epoch: e.epoch, step: last.get(e.epoch) ?? Math.round(e.epoch * spe), loss: e.validationLoss }))
      .filter((p) => p.step > 0);
  }
  const cancelled = () => model.cancelled === true;  // the API's flag, not the message's words
  // the epochs' own steps (the API's count; a refit's steps come after them, not in them)
  const stepsPerEpoch = () => epochs?.stepsPerEpoch || (op?.metadata?.totalSteps || 0) / (model.tuningTask?.hyperparameters?.epochCount || 1);

  /** The epoch whose weights are served: the chosen one, or for a cancelled model (none
   *  chosen) the weights at the step where it stopped, i.e. its last, partial epoch. */
  function servedEpoch() {
    if (model.state !== "ACTIVE" || !epochs?.epochs?.length) return null;
    if (epochs.selectedEpoch) return epochs.selectedEpoch;
    if (epochs.refit) return null;  // the refit is served, or none yet
    return cancelled() ? epochs.epochs[epochs.epochs.length - 1].epoch : null;
  }

  // Where the epoch advice comes from, in words: the advice's basis (GET …/epochs).
  const BASIS = {
    validation: "From the validation scores",
    first_run: "From a first run on part of the data",
    training_loss: "From the training loss",
  };
  const BEST = {
    validation: "★ advised by the validation scores",
    first_run: "★ best in the first run",
    training_loss: "(advised: the training loss levels off)",
  };

  function drawAdvice() {
    const box = $("#advice");
    const ev = evaluation();
    if (!epochs || !epochs.epochs?.length) {
      render(box, html`<p class="hint">One point per optimizer step; dashed lines mark the end of each epoch.</p>
        ${ev?.validation?.message ? html`<p class="hint" id="validation-note">${ev.validation.message}</p>` : ""}`);
      drawWrong();
      return;
    }
    const canPick = model.state === "ACTIVE" && may("WRITER");
    const served = servedEpoch();
    const spe = stepsPerEpoch();
    const metric = metricName(ev?.metric);
    const other = otherScore(ev?.metric);
    const scored = new Map((ev?.epochs || []).map((e) => [e.epoch, e]));
    const withScores = Boolean(ev?.baseline || scored.size);
    const basis = epochs.advice?.basis || "training_loss";
    const state = (e) => {
      if (e.checkpoint) return "";
      const ran = spe ? e.lastStep - (e.epoch - 1) * spe : 0;
      const of = spe ? `: ${ran} of ${spe} steps` : "";
      return model.state === "CREATING" ? ` (running${of})` : ` (partial${of}, cancelled)`;
    };
    const servedText = (e) => {
      if (served !== e.epoch) return "";
      return e.checkpoint ? "✔ served" : `✔ served (the weights at step ${e.lastStep})`;
    };
    const loss = (v) => (typeof v === "number" ? v.toFixed(4) : "—");
    const scoreCells = (sc, vloss) => withScores ? html`
        <td data-label="Validation loss" class="mono">${loss(vloss ?? sc?.validationLoss)}</td>
        <td data-label="${other.name}" class="mono">${fmtScore(sc?.[other.key])}</td>
        <td data-label="${metric}" class="mono score">${fmtScore(sc?.score)}</td>` : "";
    const best = epochs.advice?.epoch;
    render(box, html`
      <p class="hint">One point per optimizer step; dashed lines mark the end of each finished epoch${epochs.selectedEpoch ? "; the green one is the epoch being served" : ""}${cancelled() ? "; the shaded band is the epoch the cancel cut short" : ""}${withScores ? "; diamonds are the validation loss after each epoch" : ""}.</p>
      ${epochs.advice ? html`<div class="notice info" id="epoch-advice" data-basis="${basis}"><b>${BASIS[basis] || "Epoch advice"}:</b> ${epochs.advice.message}</div>` : ""}
      ${ev?.validation?.message ? html`<p class="hint" id="validation-note">${ev.validation.message}</p>` : ""}
      <div class="epochs-wrap"><table class="list small" id="epochs"><thead><tr><th>Epoch</th><th>Training loss</th>
        ${withScores ? html`<th>Validation loss</th><th>${other.name}</th><th>${metric}</th>` : ""}<th>Served</th><th></th></tr></thead><tbody>
      ${ev?.baseline ? html`<tr data-epoch-row="0" class="baseline">
        <td data-label="Epoch">Base model <span class="muted">(before tuning)</span></td>
        <td data-label="Training loss" class="mono">—</td>${scoreCells(ev.baseline)}<td data-label="Served" class="served"></td><td></td></tr>` : ""}
      ${epochs.epochs.map((e) => html`<tr data-epoch-row="${e.epoch}" class="${e.checkpoint ? "" : "partial"}${best === e.epoch ? " best" : ""}">
        <td data-label="Epoch">${e.epoch}${best === e.epoch ? html` <span class="best-mark" title="${epochs.advice.message}">${BEST[basis] || "(advised)"}</span>` : ""}${state(e)}</td>
        <td data-label="Training loss" class="mono">${e.meanLoss.toFixed(4)}</td>
        ${scoreCells(scored.get(e.epoch), e.validationLoss)}
        <td data-label="Served" class="served">${servedText(e)}</td>
        <td>${canPick && e.checkpoint && served !== e.epoch ? html`<button type="button" class="btn ghost small" data-epoch="${e.epoch}">Use epoch ${e.epoch}</button>` : ""}</td>
      </tr>`)}${refitRow(canPick, withScores, other.name)}</tbody></table></div>
      ${epochs.refit ? html`<p class="hint" id="refit-note">${epochs.refit.message}</p>` : ""}
      ${ev?.metricNote ? html`<p class="hint" id="score-note">${ev.metricNote}</p>` : ""}`);
    drawWrong();
  }

  /** The refit on every example after the epochs (planned, running or done): its own row, with
   *  no scores (its validation examples are training examples) and its button to serve it. */
  function refitRow(canPick, withScores, otherName) {
    const r = epochs.refit;
    if (!r) return "";
    const ran = r.meanLoss == null ? "—" : r.meanLoss.toFixed(4);
    const status = { PLANNED: " (after the epochs)", RUNNING: " (running)", CANCELLED: " (cancelled)" }[r.status] || "";
    const steps = r.steps ? `, ${r.steps} steps` : "";
    return html`<tr data-epoch-row="refit" class="refit${r.status === "COMPLETED" ? "" : " partial"}">
      <td data-label="Epoch">Refit on all ${r.examples} examples<span class="muted">${steps}</span>${status}</td>
      <td data-label="Training loss" class="mono">${ran}</td>
      ${withScores ? html`<td data-label="Validation loss" class="mono">—</td><td data-label="${otherName}" class="mono">—</td><td class="mono score" title="The held-out examples are training examples of the refit: they cannot score it">not scored</td>` : ""}
      <td data-label="Served" class="served">${r.served ? "✔ served" : ""}</td>
      <td>${canPick && r.status === "COMPLETED" && !r.served ? html`<button type="button" class="btn ghost small" data-refit="1">Use the refit</button>` : ""}</td></tr>`;
  }

  /** A few wrong answers per epoch (and of the base model): what the scores mean in words. */
  function drawWrong() {
    const ev = evaluation();
    const rows = [...(ev?.baseline ? [ev.baseline] : []), ...(ev?.epochs || [])].filter((e) => e.wrongAnswers?.length);
    const n = ev?.validation?.exampleCount;
    const open = new Set($$("#wrong details[open]").map((d) => d.dataset.wrongEpoch));
    render($("#wrong"), rows.length ? html`<h3>Wrong answers on the validation examples</h3>
      ${rows.map((e) => html`<details class="wrong" data-wrong-epoch="${e.epoch}" ${open.has(String(e.epoch)) ? "open" : ""}>
        <summary>${e.epoch ? `Epoch ${e.epoch}` : "Base model"}: ${typeof e.exactMatch === "number" && n ? `${Math.round(e.exactMatch * n)} of ${n} exactly right; ` : ""}${e.wrongAnswers.length} wrong answer${e.wrongAnswers.length === 1 ? "" : "s"} shown</summary>
        <table class="list small wrong-list"><thead><tr><th>Input</th><th>Expected</th><th>Answer</th></tr></thead><tbody>
        ${e.wrongAnswers.map((w) => html`<tr><td data-label="Input">${w.textInput}</td><td data-label="Expected" class="mono">${w.expected}</td>
          <td data-label="Answer" class="mono bad-answer">${w.answer === "" ? "(an empty answer)" : w.answer}</td></tr>`)}
        </tbody></table></details>`)}` : "");
  }

  function drawDetails() {
    const hp = model.tuningTask?.hyperparameters || {};
    const t = model.tuningTask || {};
    const rows = [
      ["Base model", model.baseModel],
      ["Created", new Date(model.createTime).toLocaleString()],
      ["Epochs", hp.epochCount], ["Batch size", hp.batchSize], ["Learning rate", hp.learningRate],
      ["Examples", epochs?.exampleCount ?? "…"],
      ["Total steps", op?.metadata?.totalSteps ?? "…"],
      ["Started", t.startTime ? new Date(t.startTime).toLocaleString() : "not yet"],
      ["Finished", t.completeTime ? new Date(t.completeTime).toLocaleString() : "—"],
      ["Default temperature", model.temperature ?? "—"],
      ["Description", model.description || "—"],
    ];
    render($("#details"), html`${rows.map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}`);
    const why = choices();
    render($("#choices"), why.length ? html`<h3>How the settings were chosen</h3>
      <ul class="choices small" id="choices-list">${why.map((c) => html`<li>${c}</li>`)}</ul>` : "");
  }
  /** One line per setting saying why it has its value (a value left unset is chosen from the
   *  data): the tuned model's record, or while it is queued the operation's. */
  function choices() {
    return model.tuningTask?.hyperparameters?.choices || op?.metadata?.hyperparameterChoices || [];
  }

  function fillEdit() {
    const f = $("#edit").elements;
    f.displayName.value = model.displayName || "";
    f.description.value = model.description || "";
    f.temperature.value = model.temperature ?? "";
  }

  async function loadEpochs() {
    try { epochs = await get(`${name}/epochs`); } catch { epochs = null; }
    drawAdvice(); drawChart(); drawDetails(); fillDownload();
  }

  async function poll() {
    if (stopped) return;
    try {
      const ops = await get(`${name}/operations`, { pageSize: 1 });
      op = ops.operations?.[0] || null;
      if (op?.name) op = await get(op.name);
      const wasCreating = model.state === "CREATING";
      model = await get(name);
      drawStatus();
      if (wasCreating && model.state !== "CREATING") { await loadEpochs(); toast(finishedWords(displayState(model, op))); }
      else if (model.state === "CREATING" && op?.metadata?.snapshots?.length) loadEpochs();
    } catch (e) {
      if (e.status === 404) { stopped = true; return; }
    }
    if (!stopped && model.state === "CREATING") timer = setTimeout(poll, 1000);
  }

  // -- actions --------------------------------------------------------------------------
  // Every action that fails says so on the page, in the Studio's words.
  function actionFailed(e, what) {
    const box = $("#action-error");
    if (!box) return;
    box.textContent = failure(e, what, role);
    box.hidden = false;
    box.scrollIntoView({ block: "nearest" });
  }
  const clearFailure = () => { if ($("#action-error")) $("#action-error").hidden = true; };

  $("#cancel")?.addEventListener("click", async () => {
    const ok = await confirmDialog("Cancel tuning?",
      "The job stops within one step. The model keeps the parameters learned so far and can still be called, " +
      "but a cancelled model's quality is unpredictable: it has not seen all the epochs you asked for.",
      "Cancel tuning", "Keep tuning");
    if (!ok) return;
    clearFailure();
    try { await post(`${name}:cancel`, {}); } catch (e) { actionFailed(e, "cancel the tuning"); return; }
    toast("Cancelling…");
    clearTimeout(timer); poll();
  });
  $("#delete")?.addEventListener("click", async () => {
    const ok = await confirmDialog("Delete this model?",
      `${name} and its checkpoints are removed for good. Apps that call it will get 404 NOT_FOUND.`, "Delete", "Keep the model");
    if (!ok) return;
    clearFailure();
    try { await del(name); } catch (e) { actionFailed(e, "delete the model"); return; }
    toast("Model deleted");
    location.hash = "#/library";
  });
  $("#edit")?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const err = $("#edit-error");
    err.hidden = true;
    const body = { displayName: f.displayName.value.trim(), description: f.description.value.trim() };
    const mask = ["displayName", "description"];
    if (f.temperature.value !== "") { body.temperature = Number(f.temperature.value); mask.push("temperature"); }
    try {
      model = await patch(name, body, { updateMask: mask.join(",") });
      drawStatus(); fillEdit();
      toast("Saved");
    } catch (e) { err.textContent = e.status === 400 ? e.message : failure(e, "save", role); err.hidden = false; }
  });

  // -- sharing (writers and owners; they may list, add, change and remove permissions) ------
  const who = (p) => (p.granteeType === "EVERYONE" ? "Everyone" : p.emailAddress || p.granteeType);
  async function loadPerms() {
    const box = $("#perms");
    if (!box) return;
    let list;
    try { list = (await get(`${name}/permissions`, { pageSize: 1000 })).permissions || []; }
    catch (e) { permsFailed(e, "list who has access"); return; }
    render(box, html`${list.map((p) => html`<li data-perm="${p.name}">
      <span class="grantee">${who(p)}</span>
      ${p.role === "OWNER" ? html`<span class="muted">owner</span>`
        : p.granteeType === "EVERYONE" ? html`<span class="muted">reader</span>`
        : html`<select data-role-of="${p.name}" aria-label="Role of ${who(p)}">
            <option value="READER" ${p.role === "READER" ? "selected" : ""}>reader</option>
            <option value="WRITER" ${p.role === "WRITER" ? "selected" : ""}>writer</option></select>`}
      ${p.role === "OWNER" ? "" : html`<button type="button" class="btn ghost danger small" data-unshare="${p.name}" aria-label="Remove the access of ${who(p)}">Remove</button>`}
    </li>`)}`);
  }
  function permsFailed(e, what) {
    const box = $("#perms-error");
    if (!box) return;
    box.textContent = failure(e, what, role);
    box.hidden = false;
  }
  $("#perms")?.addEventListener("change", async (ev) => {
    const sel = ev.target.closest("[data-role-of]");
    if (!sel) return;
    $("#perms-error").hidden = true;
    try {
      const p = await patch(sel.dataset.roleOf, { role: sel.value }, { updateMask: "role" });
      toast(`${who(p)} is now a ${p.role.toLowerCase()}`);
    } catch (e) { permsFailed(e, "change the role"); }
    loadPerms();
  });
  $("#perms")?.addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-unshare]");
    if (!b) return;
    const label = b.closest("li").querySelector(".grantee").textContent;
    if (!(await confirmDialog(`Remove ${label}'s access?`, `${label} can no longer see or call ${name}.`, "Remove access", "Keep the access"))) return;
    $("#perms-error").hidden = true;
    try { await del(b.dataset.unshare); toast(`${label} no longer has access`); }
    catch (e) { permsFailed(e, "remove the access"); }
    loadPerms();
  });
  $("#share")?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const err = $("#share-error");
    err.hidden = true;
    const user = f.email.value.trim();
    const newRole = f.role.value;
    try {
      await post(`${name}/permissions`, { granteeType: "USER", emailAddress: user, role: newRole });
      toast(`Shared with ${user}`);
    } catch (e) {
      if (e.reason === "ALREADY_SHARED" && e.metadata.role !== newRole) {
        // sharing again with another role means: change the role
        try {
          await patch(e.metadata.permission, { role: newRole }, { updateMask: "role" });
          toast(`${user} is now a ${newRole.toLowerCase()}`);
        } catch (e2) { err.textContent = failure(e2, "change the role", role); err.hidden = false; }
      } else {
        err.textContent = e.reason === "ALREADY_SHARED" ? `${user} already has access as ${e.metadata.role.toLowerCase()}. Change or remove it in the list below.`
          : e.reason === "USER_NOT_FOUND" ? `There is no user "${user}" on this server. Check the user name or email address, or ask your administrator to add them.`
          : e.status === 400 ? e.message : failure(e, "share the model", role);
        err.hidden = false;
        return;
      }
    }
    f.email.value = "";
    loadPerms();
  });
  $("#advice").addEventListener("click", async (ev) => {
    const r = ev.target.closest("[data-refit]");
    if (r) {
      r.disabled = true;
      clearFailure();
      try {
        epochs = await post(`${name}:selectEpoch`, { refit: true });
        toast("Now serving the refit on all the examples");
        drawAdvice(); drawChart(); fillDownload();
      } catch (e) { actionFailed(e, "serve the refit"); r.disabled = false; }
      return;
    }
    const b = ev.target.closest("[data-epoch]");
    if (!b) return;
    const epoch = Number(b.dataset.epoch);
    const last = epochs.epochs[epochs.epochs.length - 1];
    if (cancelled() && !epochs.selectedEpoch && !last.checkpoint) {
      const ok = await confirmDialog(`Serve epoch ${epoch}?`,
        `The weights served now are those at step ${last.lastStep}, in the middle of epoch ${last.epoch}, where the tuning was cancelled. ` +
        `Serving epoch ${epoch} replaces them for good: that partial epoch cannot be served again.`, `Serve epoch ${epoch}`, "Keep the current weights");
      if (!ok) return;
    }
    b.disabled = true;
    clearFailure();
    try {
      epochs = await post(`${name}:selectEpoch`, { epoch });
      toast(`Now serving epoch ${epoch}`);
      drawAdvice(); drawChart(); fillDownload();
    } catch (e) { actionFailed(e, `serve epoch ${epoch}`); b.disabled = false; }
  });

  // -- download (writers and owners: the weights are the model's owner's to give) ------------
  let dlEpochs = "";
  function fillDownload() {
    const sel = $("#download select[name=epoch]");
    const finished = (epochs?.epochs || []).filter((e) => e.checkpoint).map((e) => e.epoch);
    const refitServed = Boolean(epochs?.refit?.served);
    const key = `${finished.join(",")}|${servedEpoch() ?? ""}|${refitServed}`;
    if (!sel || key === dlEpochs) return;
    dlEpochs = key;
    const was = sel.value;
    const served = servedEpoch();
    render(sel, html`<option value="">The served weights${served ? ` (epoch ${served})` : refitServed ? " (the refit on all the examples)" : ""}</option>
      ${finished.map((e) => html`<option value="${e}">Epoch ${e}</option>`)}`);
    if ([...sel.options].some((o) => o.value === was)) sel.value = was;
  }
  $("#download")?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const [format, quantization] = f.format.value.split(":");
    const err = $("#dl-error");
    err.hidden = true;
    $("#dl-go").disabled = true;
    $("#dl-status").textContent = format === "peft" ? "Preparing the adapter…"
      : "Building the file: merging the weights takes a few seconds for a small model, longer for a large one…";
    try {
      const file = await download(`${name}:export`, { format, quantization, epoch: f.epoch.value || undefined });
      $("#dl-status").textContent = `Downloaded ${file.name} (${(file.size / 2 ** 20).toFixed(1)} MB).`;
    } catch (e) {
      $("#dl-status").textContent = "";
      err.textContent = e.status === 400 || e.status === 412 || e.rpcStatus === "FAILED_PRECONDITION"
        ? `Could not download: ${e.message}` : failure(e, "download the weights", role);
      err.hidden = false;
    } finally { $("#dl-go").disabled = false; }
  });

  // -- just created: the settings chosen, and why -------------------------------------------
  function drawCreated() {
    let created = null;
    try { created = JSON.parse(sessionStorage.getItem("tunelab-created") || "null"); } catch { /* none */ }
    if (!created || created.model !== name) return;
    sessionStorage.removeItem("tunelab-created");
    render($("#created"), html`<div class="notice ok" id="created-choices"><b>Tuning started.</b> The settings, and why:
      <ul>${(created.choices || []).map((c) => html`<li>${c}</li>`)}</ul></div>`);
  }

  // -- playground -----------------------------------------------------------------------
  $("#play").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const prompt = f.prompt.value.trim();
    if (!prompt) { f.prompt.focus(); return; }
    const cfg = { maxOutputTokens: Number(f.maxOutputTokens.value) || 64 };
    if (f.temperature.value !== "") cfg.temperature = Number(f.temperature.value);
    if (f.topP.value !== "") cfg.topP = Number(f.topP.value);
    const body = { contents: [{ role: "user", parts: [{ text: prompt }] }], generationConfig: cfg };
    const ctrl = new AbortController();
    ctrl.running = true;
    streams.push(ctrl);
    $("#run").disabled = true; $("#stop").hidden = false;
    const one = async (boxId, target) => {
      const box = $(boxId);
      const out = $(".text", box);
      out.textContent = "";
      box.classList.add("streaming");
      box.dataset.chunks = "0";
      box.dataset.events = "0";
      const count = (key) => { box.dataset[key] = String(Number(box.dataset[key]) + 1); };
      try {
        const last = await streamGenerate(target, body, (t) => { out.textContent += t; count("chunks"); }, ctrl.signal, () => count("events"));
        if (!out.textContent) out.textContent = "(an empty answer)";
        // A tuned model says when the prompt lacks the format of its training inputs (the
        // commonest reason a model that scored well answers badly in an app).
        if (target === name && last?.promptFormat?.followsTrainingFormat === false) {
          $("#prompt-format").textContent = `The prompt does not look like the training inputs: ${last.promptFormat.message}`;
          $("#prompt-format").hidden = false;
        }
      } catch (e) {
        if (e.name !== "AbortError") out.textContent = `⚠ ${e.message}`;
      } finally { box.classList.remove("streaming"); box.dataset.done = "1"; }
    };
    $("#ans-tuned").dataset.done = ""; $("#ans-base").dataset.done = "";
    $("#prompt-format").hidden = true;
    await Promise.all([one("#ans-tuned", name), one("#ans-base", model.baseModel)]);
    ctrl.running = false;
    $("#run").disabled = model.state !== "ACTIVE"; $("#stop").hidden = true;
  });
  $("#stop").addEventListener("click", () => streams.forEach((c) => c.abort()));

  function finishedWords(state) {
    const label = model.displayName || id;
    if (state === "ACTIVE") return `${label} is ready: tuning finished. Try it in the playground.`;
    if (state === "CANCELLED") return `${label}: tuning was cancelled. It keeps what it learned so far.`;
    return `${label}: tuning failed. See the message at the top of the page.`;
  }

  // -- code -----------------------------------------------------------------------------
  const codes = snippets(name, location.origin, model);
  let tab = 0;
  function drawCode() {
    render($("#code-tabs"), html`${codes.map((c, i) => html`<button type="button" role="tab" id="tab-${i}" aria-selected="${i === tab ? "true" : "false"}" tabindex="${i === tab ? "0" : "-1"}" data-tab="${i}">${c.label}</button>`)}`);
    $("#code").textContent = codes[tab].code;
    $("#code").setAttribute("aria-labelledby", `tab-${tab}`);
  }
  $("#code-tabs").addEventListener("click", (ev) => { const b = ev.target.closest("[data-tab]"); if (b) { tab = Number(b.dataset.tab); drawCode(); $(`#tab-${tab}`).focus(); } });
  $("#code-tabs").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
    tab = (tab + (ev.key === "ArrowRight" ? 1 : codes.length - 1)) % codes.length;
    drawCode(); $(`#tab-${tab}`).focus();
  });
  $("#copy").addEventListener("click", () => copyText(codes[tab].code));
  drawCode();

  const onResize = debounce(() => drawChart(), 150);
  window.addEventListener("resize", onResize);
  if ($("#edit")) fillEdit();
  drawCreated();
  drawStatus();
  await Promise.all([poll(), loadEpochs(), loadPerms()]);
  return () => {
    stopped = true; clearTimeout(timer); streams.forEach((c) => c.abort());
    window.removeEventListener("resize", onResize);
  };
}
