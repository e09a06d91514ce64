// New tuned model: data (file or table) → validation by the server → settings → create.
import { get, post, upload, del, listAll, ApiError } from "./api.js";
import { html, raw, render, esc, toast, debounce, modelId, within } from "./util.js";
import { MAX_BYTES, parseText, toUpload, locations, pastedRows } from "./dataset.js";

const SHOWN_ROWS = 200;

export async function show(main) {
  const [$, $$] = within(main);
  document.title = "New tuned model · tunelab Studio";
  const st = {
    rows: [], source: null, sourceBytes: null, edited: false,
    file: null, fileInfo: null, checking: false, rowMsgs: new Map(), general: [], warnings: [],
    seq: 0, creating: false, notLoaded: "",
  };
  const bases = (await listAll("models", "models")).filter((m) => (m.supportedGenerationMethods || []).includes("createTunedModel"));

  render(main, html`
    <div class="page-head"><div><h1>New tuned model</h1>
      <p class="sub">Give a few dozen to a few thousand examples of an input and the output you want.</p></div></div>
    <div class="grid2">
      <div>
        <section class="panel" aria-labelledby="data-h">
          <h2 id="data-h">1. Training data</h2>
          <label class="drop" id="drop" tabindex="0">
            <input type="file" id="file" accept=".csv,.tsv,.json,.jsonl,.ndjson,text/csv,application/json">
            <strong>Choose a file</strong> or drag it here<br>
            <span class="hint">CSV, JSON or JSONL, at most 4 MB, with an input column (<code>text_input</code>) and an <code>output</code> column.</span>
          </label>
          <div class="row" style="margin-top:.6rem">
            <button type="button" class="btn ghost small" id="add-row">+ Add row</button>
            <button type="button" class="btn ghost small" id="clear">Clear</button>
            <span class="spacer"></span>
            <span class="hint" id="count"></span>
          </div>
          <p class="hint">Edit any cell. Paste rows copied from a spreadsheet (two columns, input and output) into a cell to add them.</p>
          <div id="summary" aria-live="polite"></div>
          <div class="data-wrap" id="table-wrap" hidden><table class="data" id="data">
            <thead><tr><th scope="col">#</th><th scope="col">Input</th><th scope="col">Output</th><th><span class="sr-only" hidden>Remove</span></th></tr></thead>
            <tbody></tbody></table></div>
          <p class="hint" id="shown"></p>
        </section>
      </div>
      <div>
        <form class="panel" id="settings" novalidate aria-labelledby="set-h">
          <h2 id="set-h">2. Model</h2>
          <label class="field">Base model
            <select name="baseModel" id="base">${bases.map((b) => raw(`<option value="${esc(b.name)}">${esc(b.displayName || b.name)}</option>`))}</select></label>
          <label class="field">Display name <span class="hint">Up to 40 characters; the model's id is made from it.</span>
            <input type="text" name="displayName" id="display-name" maxlength="60" required placeholder="Support reply writer"></label>
          <div class="notice bad" id="name-error" hidden></div>
          <label class="field">Description <span class="hint">Optional.</span>
            <textarea name="description" rows="2"></textarea></label>
          <details id="advanced">
            <summary><b>Advanced settings</b></summary>
            <p class="hint">Total steps = ⌈examples ÷ batch size⌉ × epochs. <span id="steps"></span></p>
            <label class="field">Epochs <span class="hint">Passes over the whole data set. Default 5. Too many can over-fit: the model page shows where the loss stops falling, and you can use that epoch afterwards.</span>
              <input type="number" name="epochCount" min="1" max="1000" step="1" value="5"></label>
            <label class="field">Batch size <span class="hint">Examples per optimizer step. Default 4. Larger batches give smoother but fewer steps.</span>
              <input type="number" name="batchSize" min="1" max="1024" step="1" value="4"></label>
            <fieldset><legend>Learning rate</legend>
              <p class="hint" style="margin-top:0">How far each step moves the parameters. The default is the base model's recommended rate (0.001 for the bundled models).</p>
              <label class="row small"><input type="radio" name="lrMode" value="default" checked> Recommended (default)</label>
              <label class="row small"><input type="radio" name="lrMode" value="rate"> Learning rate
                <input type="number" name="learningRate" step="any" min="0" value="0.001" aria-label="Learning rate" style="width:8rem"></label>
              <label class="row small"><input type="radio" name="lrMode" value="multiplier"> Multiplier × recommended
                <input type="number" name="learningRateMultiplier" step="any" min="0" value="1" aria-label="Learning rate multiplier" style="width:6rem"></label>
            </fieldset>
            <div class="notice bad" id="hp-error" hidden></div>
          </details>
          <div class="notice bad" id="create-error" role="alert" hidden></div>
          <button class="btn" type="submit" id="create" disabled style="width:100%;justify-content:center;margin-top:.8rem">Create tuned model</button>
          <p class="hint" id="create-why"></p>
        </form>
      </div>
    </div>`);

  const tbody = $("#data tbody");

  // -- the table ------------------------------------------------------------------------
  function drawTable() {
    const a = document.activeElement;
    const keep = a && a.dataset && a.dataset.f && tbody.contains(a)
      ? { i: a.dataset.i, f: a.dataset.f, s: a.selectionStart, e: a.selectionEnd } : null;
    drawRows();
    if (keep) {
      const t = tbody.querySelector(`textarea[data-i="${keep.i}"][data-f="${keep.f}"]`);
      if (t) { t.focus(); t.setSelectionRange(keep.s, keep.e); }
    }
  }
  function drawRows() {
    $("#table-wrap").hidden = st.rows.length === 0;
    $("#count").textContent = st.rows.length ? `${st.rows.length} example${st.rows.length === 1 ? "" : "s"}` : "";
    let idx = st.rows.map((_, i) => i);
    if (idx.length > SHOWN_ROWS) {
      const flagged = new Set(st.rowMsgs.keys());
      idx = idx.filter((i) => i < 100 || flagged.has(i));
    }
    $("#shown").textContent = idx.length < st.rows.length ? `Showing the first 100 rows and every row with a finding (${idx.length} of ${st.rows.length}).` : "";
    render(tbody, html`${idx.map((i) => {
      const r = st.rows[i];
      const msgs = st.rowMsgs.get(i) || [];
      const cls = msgs.some((m) => m.level === "bad") ? "bad" : msgs.length ? "warn" : "";
      const num = r.label.replace(/^(row|line|example) /, "");
      return html`<tr class="${cls}" data-row="${i}" data-label="${r.label}">
          <td class="num" title="${r.label}">${num}</td>
          <td>${r.system !== undefined ? html`<div class="small muted sysprompt" title="System prompt">System: ${r.system}</div>` : ""}<textarea data-i="${i}" data-f="input" aria-label="Input of ${r.label}" rows="1">${r.input}</textarea></td>
          <td><textarea data-i="${i}" data-f="output" aria-label="Output of ${r.label}" rows="1">${r.output}</textarea></td>
          <td><button type="button" class="iconbtn" data-remove="${i}" aria-label="Remove ${r.label}" title="Remove">✕</button></td></tr>
        ${msgs.length ? html`<tr class="msg ${cls}" data-msg-for="${i}"><td colspan="4">${msgs.map((m) => html`<div class="rowmsg ${m.level}" role="${m.level === "bad" ? "alert" : "note"}">${m.level === "bad" ? "✖ " : "⚠ "}${m.text}</div>`)}</td></tr>` : ""}`;
    })}`);
  }

  function relabel() {
    // The table now goes to the server as a normalized CSV: row 1 is the header.
    st.rows.forEach((r, i) => { r.label = `row ${i + 2}`; });
  }

  function changed() {
    if (!st.edited) { st.edited = true; relabel(); }
    st.notLoaded = "";
    st.file = null;
    st.checking = true;
    drawSummary();
    updateCreate();
    validateSoon();
  }

  tbody.addEventListener("input", (ev) => {
    const t = ev.target;
    if (!t.dataset.f) return;
    st.rows[Number(t.dataset.i)][t.dataset.f] = t.value;
    changed();
  });
  tbody.addEventListener("paste", (ev) => {
    const t = ev.target;
    if (!t.dataset.f) return;
    const pairs = pastedRows(ev.clipboardData.getData("text/plain"));
    if (!pairs) return;
    ev.preventDefault();
    const at = Number(t.dataset.i);
    pairs.forEach(([input, output], k) => {
      if (at + k < st.rows.length) Object.assign(st.rows[at + k], { input, output });
      else st.rows.push({ input, output, label: "" });
    });
    relabel(); st.edited = true;
    drawTable(); changed();
    toast(`Pasted ${pairs.length} row${pairs.length === 1 ? "" : "s"}`);
  });
  tbody.addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-remove]");
    if (!b) return;
    st.rows.splice(Number(b.dataset.remove), 1);
    st.edited = true; relabel(); st.rowMsgs = new Map();
    drawTable(); changed();
  });
  $("#add-row").addEventListener("click", () => {
    st.rows.push({ input: "", output: "", label: "" });
    st.edited = true; relabel();
    drawTable(); changed();
    const cells = $$("textarea[data-f=input]", tbody);
    cells[cells.length - 1]?.focus();
  });
  $("#clear").addEventListener("click", () => {
    Object.assign(st, { rows: [], file: null, source: null, edited: false, rowMsgs: new Map(), general: [], warnings: [], checking: false, notLoaded: "" });
    drawTable(); drawSummary(); updateCreate();
  });

  // -- files ----------------------------------------------------------------------------
  async function takeFile(f) {
    if (!f) return;
    st.notLoaded = "";
    if (f.size > MAX_BYTES) {
      // refused before anything is read or sent; the data already in the table stays as it is
      st.notLoaded = `${f.name} was not loaded: it is ${(f.size / 2 ** 20).toFixed(1)} MB and the limit is 4 MB. ` +
        "Remove examples or shorten them, or split the file and tune on a part." +
        (st.rows.length ? " The data below is unchanged." : "");
      drawSummary(); return;
    }
    st.general = []; st.rowMsgs = new Map(); st.warnings = [];
    const text = await f.text();
    st.rows = parseText(text, f.name).rows;
    st.source = f; st.edited = false; st.file = null;
    const dn = $("#display-name");
    if (!dn.value) dn.value = f.name.replace(/\.[^.]+$/, "").replace(/[_-]+/g, " ").slice(0, 40);
    drawTable();
    validate();
  }
  const input = $("#file");
  input.addEventListener("change", () => { takeFile(input.files[0]); input.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); input.click(); } });
  for (const e of ["dragenter", "dragover"]) drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  for (const e of ["dragleave", "drop"]) drop.addEventListener(e, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); takeFile(ev.dataTransfer.files[0]); });

  // -- validation by the server -----------------------------------------------------------
  function rowIndex(loc) {
    if (loc.kind === "example") return loc.n - 1 < st.rows.length ? loc.n - 1 : -1;
    return st.rows.findIndex((r) => r.label === `${loc.kind} ${loc.n}`);
  }
  function attach(messages, level) {
    for (const text of messages) {
      const where = [...new Set(locations(text).map(rowIndex).filter((i) => i >= 0))];
      if (!where.length) { (level === "bad" ? st.general : st.warnings).push(text); continue; }
      for (const i of where) {
        if (!st.rowMsgs.has(i)) st.rowMsgs.set(i, []);
        st.rowMsgs.get(i).push({ level, text: text.replace(/^[^:]*?(row|line|example)s? [^:]*: /, "") });
      }
      if (level === "warn" && where.length > 1) st.warnings.push(text);
    }
  }

  async function validate() {
    if (!st.rows.length && !st.source) { st.checking = false; drawSummary(); updateCreate(); return; }
    const seq = ++st.seq;
    st.checking = true; drawSummary(); updateCreate();
    const form = new FormData();
    if (st.edited || !st.source) {
      const { blob, name } = toUpload(st.rows, (st.source?.name || "studio-data").replace(/\.[^.]+$/, ""));
      form.append("file", blob, name);
    } else {
      form.append("file", st.source, st.source.name);
    }
    let file = null, error = null;
    try { file = await upload("files", form); } catch (e) { error = e; }
    if (seq !== st.seq) { if (file) del(file.name).catch(() => {}); return; }
    if (st.file) del(st.file.name).catch(() => {});
    st.checking = false; st.rowMsgs = new Map(); st.general = []; st.warnings = [];
    if (file) {
      st.file = file;
      attach(file.warnings || [], "warn");
    } else {
      st.file = null;
      const violations = (error.details || []).flatMap((d) => d.fieldViolations || []).map((v) => v.description);
      if (violations.length) attach(violations, "bad");
      else st.general.push(error.message);
    }
    drawTable(); drawSummary(); updateCreate();
  }
  const validateSoon = debounce(validate, 600);

  function drawSummary() {
    const box = $("#summary");
    const nBad = [...st.rowMsgs.values()].filter((m) => m.some((x) => x.level === "bad")).length;
    const parts = [];
    if (st.notLoaded) parts.push(html`<div class="notice bad" role="alert" id="file-error">${st.notLoaded}</div>`);
    if (st.checking) parts.push(html`<div class="notice info"><span class="spinner"></span> Checking the data…</div>`);
    else if (st.general.length || nBad) {
      parts.push(html`<div class="notice bad" role="alert" id="data-errors"><b>Fix ${nBad ? `${nBad} row${nBad === 1 ? "" : "s"}` : "the data"} before creating the model.</b>
        ${st.general.length ? html`<ul>${st.general.map((g) => html`<li>${g}</li>`)}</ul>` : ""}</div>`);
    } else if (st.file) {
      parts.push(html`<div class="notice ok" id="data-ok">✔ ${st.file.exampleCount} examples checked by the server: ready to tune.</div>`);
    }
    if (!st.checking && st.warnings.length) {
      parts.push(html`<div class="notice warn"><b>Warnings</b> (the model can still be created):<ul>${st.warnings.map((w) => html`<li>${w}</li>`)}</ul></div>`);
    }
    render(box, html`${parts}`);
  }

  // -- settings and create ------------------------------------------------------------------
  const form = $("#settings");
  function hyperparameters() {
    const f = form.elements;
    const hp = { epochCount: Number(f.epochCount.value), batchSize: Number(f.batchSize.value) };
    const problems = [];
    if (!Number.isInteger(hp.epochCount) || hp.epochCount < 1) problems.push("Epochs must be a whole number of at least 1.");
    if (!Number.isInteger(hp.batchSize) || hp.batchSize < 1) problems.push("Batch size must be a whole number of at least 1.");
    const mode = form.querySelector("input[name=lrMode]:checked").value;
    if (mode === "rate") {
      hp.learningRate = Number(f.learningRate.value);
      if (!(hp.learningRate > 0)) problems.push("The learning rate must be a positive number.");
    } else if (mode === "multiplier") {
      hp.learningRateMultiplier = Number(f.learningRateMultiplier.value);
      if (!(hp.learningRateMultiplier > 0)) problems.push("The multiplier must be a positive number.");
    }
    return { hp, problems };
  }
  function updateCreate() {
    const { hp, problems } = hyperparameters();
    const n = st.rows.length;
    $("#steps").textContent = n && hp.batchSize > 0 && hp.epochCount > 0
      ? `With ${n} examples: ${Math.ceil(n / hp.batchSize)} × ${hp.epochCount} = ${Math.ceil(n / hp.batchSize) * hp.epochCount} steps.` : "";
    const hpErr = $("#hp-error");
    hpErr.hidden = !problems.length; hpErr.textContent = problems.join(" ");
    const name = $("#display-name").value.trim();
    const nameErr = $("#name-error");
    nameErr.hidden = name.length <= 40;
    nameErr.textContent = `The display name is ${name.length} characters; the limit is 40.`;
    let why = "";
    if (!n && !st.source) why = "Add training data to continue.";
    else if (st.checking) why = "Waiting for the data check…";
    else if (!st.file) why = "Fix the data errors shown next to the rows.";
    else if (!name) why = "Give the model a display name.";
    else if (name.length > 40 || problems.length) why = "Fix the settings above.";
    $("#create").disabled = Boolean(why) || st.creating;
    $("#create").textContent = st.creating ? "Creating…" : "Create tuned model";
    if (st.creating) why = "Checking the examples against the base model (its first use loads it, which can take a minute)…";
    $("#create-why").textContent = why;
  }
  form.addEventListener("input", updateCreate);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if ($("#create").disabled) return;
    const { hp } = hyperparameters();
    const f = form.elements;
    const err = $("#create-error");
    err.hidden = true;
    st.creating = true; updateCreate();
    try {
      const op = await post("tunedModels", {
        displayName: f.displayName.value.trim(),
        description: f.description.value.trim() || undefined,
        baseModel: f.baseModel.value,
        tuningTask: { hyperparameters: hp, trainingData: { file: st.file.name } },
      });
      const id = modelId(op.metadata.tunedModel);
      del(st.file.name).catch(() => {});
      toast("Tuning started");
      location.hash = `#/models/${id}`;
    } catch (e) {
      const violations = (e.details || []).flatMap((d) => d.fieldViolations || []).map((v) => v.description);
      if (violations.length) { st.rowMsgs = new Map(); st.general = []; attach(violations, "bad"); drawTable(); drawSummary(); }
      err.textContent = e.message; err.hidden = false;
    } finally {
      st.creating = false; updateCreate();
    }
  });
  drawSummary(); updateCreate();
}
