// New tuned model: data (a file, pasted text or the table) → read and checked by the server
// (POST /studio/datasets:preview) → settings → upload and create. The page parses nothing
// itself: the table is the server's reading of the data, its problems and warnings are placed
// by their structured fields. The examples table is an ARIA grid: one tab stop, arrow keys
// between cells, Enter (or typing) edits a cell, Escape leaves it.
import { post, upload, del, listAll } from "./api.js";
import { html, raw, render, esc, toast, debounce, modelId, within, setLeaveGuard, failure } from "./util.js";
import { limits, overLimit, readDataset, tableRows, pastedFile, toUpload } from "./dataset.js";

// The Studio's words for each kind of warning the server reports (data/validate.py's codes).
const WARNING_TITLES = {
  DUPLICATE_EXAMPLES: "Identical examples",
  CONFLICTING_OUTPUTS: "Same input, different outputs",
  MIXED_FORMATS: "Mixed formats",
  MIXED_SYSTEM_PROMPTS: "System prompt on some rows only",
  PROMPT_FORMAT: "Input format differs",
  CONTROL_TOKEN: "Chat control token in the text",
  TASK_SIZE: "Few examples for this kind of task",
};

const SHOWN_ROWS = 200;

export async function show(main) {
  const [$, $$] = within(main);
  document.title = "New tuned model · tunelab Studio";
  const st = {
    rows: [], source: null, edited: false,
    ready: 0,   // the examples of the last check that found no problem (0: not ready)
    checking: false, rowMsgs: new Map(), general: [], warnings: [],
    seq: 0, creating: false, notLoaded: "",
    header: null, columns: null, columnMsgs: [], autoName: "",
    cursor: { row: 0, col: 0 },   // the grid's active cell (col 0 input, 1 output, 2 remove)
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
          <details id="paste-box" class="small">
            <summary>Or paste the data as text</summary>
            <label class="field">CSV, JSON or JSONL, as a file would hold it
              <textarea id="paste-text" rows="5" spellcheck="false"></textarea></label>
            <button type="button" class="btn ghost small" id="paste-read">Read the pasted data</button>
          </details>
          <div class="row" style="margin-top:.6rem">
            <button type="button" class="btn ghost small" id="add-row">+ Add row</button>
            <button type="button" class="btn ghost small" id="clear">Clear</button>
            <span class="spacer"></span>
            <span class="hint" id="count"></span>
          </div>
          <p class="hint" id="grid-help">Edit any cell: in the table, arrow keys move between cells, Enter or typing edits one and Escape leaves it. Paste rows copied from a spreadsheet (two columns, input and output) into a cell to add them.</p>
          <div id="columns" class="columns" hidden></div>
          <div id="summary" aria-live="polite"></div>
          <div class="data-wrap" id="table-wrap" hidden><table class="data" id="data" role="grid" aria-label="Training examples" aria-describedby="grid-help">
            <thead><tr role="row"><th scope="col" role="columnheader">#</th><th scope="col" role="columnheader">Input</th><th scope="col" role="columnheader">Output</th><th role="columnheader"><span class="sr-only">Remove</span></th></tr></thead>
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
            <input type="text" name="displayName" id="display-name" maxlength="40" required placeholder="Support reply writer"></label>
          <div class="notice bad" id="name-error" hidden></div>
          <label class="field">Description <span class="hint">Optional.</span>
            <textarea name="description" rows="2"></textarea></label>
          <details id="advanced">
            <summary><b>Advanced settings</b></summary>
            <p class="hint">Total steps = ⌈examples ÷ batch size⌉ × epochs. Left empty, a setting is chosen from your data, and the model page says why. <span id="steps"></span></p>
            <label class="field">Epochs <span class="hint">Passes over the whole data set. Automatic: about 100 steps for a small data set, 5 from 100 examples. Too many can over-fit: the model page shows the validation scores of every epoch, and you can use another epoch afterwards.</span>
              <input type="number" name="epochCount" min="1" step="1" placeholder="Automatic"></label>
            <label class="field">Batch size <span class="hint">Examples per optimizer step. Automatic: 4 below 1,000 examples, more for larger data sets. Larger batches give smoother but fewer steps.</span>
              <input type="number" name="batchSize" min="1" step="1" placeholder="Automatic"></label>
            <fieldset><legend>Learning rate</legend>
              <p class="hint" style="margin-top:0">How far each step moves the parameters. The default is the base model's recommended rate (0.001 for the bundled models).</p>
              <label class="row small"><input type="radio" name="lrMode" value="default" checked> Recommended (default)</label>
              <label class="row small"><input type="radio" name="lrMode" value="rate"> Learning rate
                <input type="number" name="learningRate" step="any" min="0" value="0.001" aria-label="Learning rate" style="width:8rem"></label>
              <label class="row small"><input type="radio" name="lrMode" value="multiplier"> Multiplier × recommended
                <input type="number" name="learningRateMultiplier" step="any" min="0" value="1" aria-label="Learning rate multiplier" style="width:6rem"></label>
            </fieldset>
            <label class="row small"><input type="checkbox" name="freeAnswers"> Free answers
              <span class="hint">Where every output is one of a few short labels (a classifier), the tuned model answers with one of them: an answer that is none of them is replaced by the label it finds most likely; where every output has one fixed shape (a date's 9999-99-99), answers keep to it. Tick this to keep every answer as the model writes it.</span></label>
            <div class="notice bad" id="hp-error" hidden></div>
          </details>
          <div class="notice bad" id="create-error" role="alert" hidden></div>
          <button class="btn" type="submit" id="create" disabled style="width:100%;justify-content:center;margin-top:.8rem">Create tuned model</button>
          <p class="hint" id="create-why"></p>
        </form>
      </div>
    </div>`);

  const tbody = $("#data tbody");

  // -- the table (an ARIA grid) ----------------------------------------------------------
  const cellSel = (row, col) => `td[data-cell="${row}:${col}"]`;
  function drawTable() {
    const a = document.activeElement;
    const inGrid = a && tbody.contains(a);
    const editing = inGrid && a.dataset.f ? { s: a.selectionStart, e: a.selectionEnd } : null;
    drawRows();
    const cell = activeCell();
    if (!cell) return;
    cell.tabIndex = 0;
    if (editing) {
      const t = cell.querySelector("textarea");
      if (t) { t.focus(); t.setSelectionRange(editing.s, editing.e); }
    } else if (inGrid) cell.focus();
  }
  function shownRows() { return $$("tr[data-row]", tbody).map((tr) => Number(tr.dataset.row)); }
  /** The cursor's cell, moved to the nearest shown row when its row is gone. */
  function activeCell() {
    const rows = shownRows();
    if (!rows.length) return null;
    if (!rows.includes(st.cursor.row)) st.cursor.row = rows.filter((r) => r < st.cursor.row).pop() ?? rows[0];
    return $(cellSel(st.cursor.row, st.cursor.col), tbody);
  }
  function moveTo(row, col, edit = false) {
    const old = $('td[tabindex="0"]', tbody);
    if (old) old.tabIndex = -1;
    st.cursor = { row, col };
    const cell = activeCell();
    cell.tabIndex = 0;
    const t = cell.querySelector("textarea");
    if (edit && t) { t.focus(); t.setSelectionRange(t.value.length, t.value.length); }
    else cell.focus();
    cell.scrollIntoView({ block: "nearest" });
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
    $("#data").setAttribute("aria-rowcount", String(st.rows.length + 1));
    render(tbody, html`${idx.map((i) => {
      const r = st.rows[i];
      const msgs = st.rowMsgs.get(i) || [];
      const cls = msgs.some((m) => m.level === "bad") ? "bad" : msgs.length ? "warn" : "";
      const num = r.label.replace(/^(row|line|example) /, "");
      const described = msgs.length ? `msg-${i}` : "";
      return html`<tr role="row" aria-rowindex="${i + 2}" class="${cls}" data-row="${i}" data-label="${r.label}">
          <th scope="row" role="rowheader" class="num" title="${r.label}">${num}</th>
          <td role="gridcell" tabindex="-1" data-cell="${i}:0" aria-describedby="${described}">${r.system !== undefined ? html`<div class="small muted sysprompt" title="System prompt">System: ${r.system}</div>` : ""}<textarea tabindex="-1" data-i="${i}" data-f="input" aria-label="Input of ${r.label}" rows="1">${r.input}</textarea></td>
          <td role="gridcell" tabindex="-1" data-cell="${i}:1" aria-describedby="${described}"><textarea tabindex="-1" data-i="${i}" data-f="output" aria-label="Output of ${r.label}" rows="1">${r.output}</textarea></td>
          <td role="gridcell" tabindex="-1" data-cell="${i}:2"><button type="button" tabindex="-1" class="iconbtn" data-remove="${i}" aria-label="Remove ${r.label}" title="Remove">✕</button></td></tr>
        ${msgs.length ? html`<tr class="msg ${cls}" data-msg-for="${i}" role="presentation"><td colspan="4" id="msg-${i}" role="presentation">${msgs.map((m) => html`<div class="rowmsg ${m.level}" data-code="${m.code || ""}">${m.level === "bad" ? "✖ " : "⚠ "}${m.text}</div>`)}</td></tr>` : ""}`;
    })}`);
  }

  // Keys in the grid. On a cell: arrows, Home/End, Ctrl+Home/End and PageUp/PageDown move;
  // Enter or F2 edits (or presses Remove); typing a character starts editing with it. In a
  // cell being edited, Escape goes back to moving; Tab leaves the table.
  tbody.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t.dataset.f) {
      if (ev.key === "Escape") { ev.preventDefault(); moveTo(Number(t.dataset.i), t.dataset.f === "input" ? 0 : 1); }
      return;
    }
    const cell = t.closest("td[data-cell]");
    if (!cell || cell !== t) return;
    const rows = shownRows();
    const at = rows.indexOf(st.cursor.row);
    const { col } = st.cursor;
    const go = (k, c) => { ev.preventDefault(); moveTo(rows[Math.max(0, Math.min(rows.length - 1, k))], Math.max(0, Math.min(2, c))); };
    switch (ev.key) {
      case "ArrowDown": return go(at + 1, col);
      case "ArrowUp": return go(at - 1, col);
      case "ArrowRight": return go(at, col + 1);
      case "ArrowLeft": return go(at, col - 1);
      case "PageDown": return go(at + 10, col);
      case "PageUp": return go(at - 10, col);
      case "Home": return ev.ctrlKey ? go(0, 0) : go(at, 0);
      case "End": return ev.ctrlKey ? go(rows.length - 1, 2) : go(at, 2);
      case "Enter": case "F2": case " ":
        if (col === 2) { ev.preventDefault(); cell.querySelector("button").click(); return; }
        if (ev.key === " ") break;
        ev.preventDefault(); moveTo(st.cursor.row, col, true); return;
      default: break;
    }
    if (col < 2 && ev.key.length === 1 && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      const ta = cell.querySelector("textarea");
      ta.focus(); ta.setSelectionRange(ta.value.length, ta.value.length);   // the key types into it
    }
  });
  // A click (or any focus) inside a cell makes it the grid's active cell.
  tbody.addEventListener("focusin", (ev) => {
    const cell = ev.target.closest("td[data-cell]");
    if (!cell) return;
    const [row, col] = cell.dataset.cell.split(":").map(Number);
    if (row === st.cursor.row && col === st.cursor.col && cell.tabIndex === 0) return;
    const old = $('td[tabindex="0"]', tbody);
    if (old) old.tabIndex = -1;
    st.cursor = { row, col };
    cell.tabIndex = 0;
  });

  function relabel() {
    // The table now goes to the server as a normalized CSV: row 1 is the header.
    st.rows.forEach((r, i) => { r.label = `row ${i + 2}`; });
  }

  function changed() {
    if (!st.edited) { st.edited = true; relabel(); }
    st.notLoaded = "";
    st.ready = 0;
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
  // Rows copied from a spreadsheet (tab-separated) and pasted into a cell are read by the
  // server as a TSV file, then written over the table from that cell on.
  tbody.addEventListener("paste", async (ev) => {
    const t = ev.target.dataset.f ? ev.target : ev.target.closest("td[data-cell]")?.querySelector("textarea");
    if (!t) return;
    const blob = pastedFile(ev.clipboardData.getData("text/plain"));
    if (!blob) return;
    ev.preventDefault();
    const over = await overLimit(blob);
    if (over) { toast(`The pasted rows were not read: ${over}. Paste fewer at a time.`); return; }
    let read;
    try { read = await readDataset(blob, "pasted rows.tsv"); } catch (e) { toast(failure(e, "read the pasted rows")); return; }
    const pairs = tableRows(read);
    const at = Number(t.dataset.i);
    pairs.forEach(({ input, output }, k) => {
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
    moveTo(st.rows.length - 1, 0, true);
  });
  $("#clear").addEventListener("click", () => {
    st.seq++;   // a check still under way is forgotten
    Object.assign(st, { rows: [], ready: 0, source: null, edited: false, rowMsgs: new Map(), general: [], warnings: [], checking: false, notLoaded: "",
      header: null, columns: null, columnMsgs: [] });
    forgetAutoName();
    drawColumns(); drawTable(); drawSummary(); updateCreate();
  });

  // The form's limits come from the server's own source of them (GET /studio/limits), never
  // re-typed here: the server checks the same numbers.
  limits.then((lim) => {
    if (!lim) return;
    const bound = (sel, l) => {
      const el = $(sel);
      if (!el || !l) return;
      if (l.minimum != null) el.min = l.minimum;
      if (l.maximum != null) el.max = l.maximum;
    };
    bound('input[name="epochCount"]', lim.epochCount);
    bound('input[name="batchSize"]', lim.batchSize);
    bound('input[name="learningRate"]', lim.learningRate);
    bound('input[name="learningRateMultiplier"]', lim.learningRateMultiplier);
    if (lim.displayName?.maxLength) $("#display-name").maxLength = lim.displayName.maxLength;
  }).catch(() => {});

  // The display name follows the loaded file until the user writes one of their own.
  function forgetAutoName() {
    const dn = $("#display-name");
    if (st.autoName && dn.value === st.autoName) dn.value = "";
    st.autoName = "";
  }
  function nameAfter(file) {
    const dn = $("#display-name");
    if (file.pasted) return;
    if (dn.value && dn.value !== st.autoName) return;
    dn.value = st.autoName = file.name.replace(/\.[^.]+$/, "").replace(/[_-]+/g, " ").slice(0, 40);
  }

  // -- columns (CSV): found by name, or chosen here ------------------------------------------
  function drawColumns() {
    const box = $("#columns");
    box.hidden = !st.header;
    if (!st.header) { box.replaceChildren(); return; }
    const c = st.columns || { input: "", output: "" };
    const options = (sel) => html`<option value="" ${sel ? "" : "selected"}>Choose a column…</option>${st.header.map((h) => html`<option value="${h}" ${h === sel ? "selected" : ""}>${h}</option>`)}`;
    const unknown = !c.input || !c.output || c.input === c.output;
    render(box, html`
      <p class="small ${unknown ? "" : "muted"}" id="columns-why">${unknown
        ? html`<b>Which columns hold the examples?</b> This file's columns are ${st.header.join(", ")}. Choose the column with the input the model receives and the one with the output it should give.`
        : "Columns used from the file:"}</p>
      <div class="row">
        <label class="field small">Input column <select id="col-input">${options(c.input)}</select></label>
        <label class="field small">Output column <select id="col-output">${options(c.output)}</select></label>
      </div>
      ${st.columnMsgs.length ? html`<div class="notice bad" role="alert" id="columns-error">${st.columnMsgs.join(" ")}</div>` : ""}`);
  }
  $("#columns").addEventListener("change", () => {
    const input = $("#col-input").value, output = $("#col-output").value;
    st.columns = { input, output };
    st.columnMsgs = input && input === output ? ["Choose two different columns."] : [];
    st.rows = []; st.edited = false; st.ready = 0; st.rowMsgs = new Map(); st.general = []; st.warnings = [];
    drawColumns(); drawTable();
    if (input && output && input !== output) validate(); else { drawSummary(); updateCreate(); }
  });

  // -- files ----------------------------------------------------------------------------
  async function takeFile(f) {
    if (!f) return;
    st.notLoaded = "";
    const over = await overLimit(f);
    if (over) {
      // refused before anything is read or sent; the data already in the table stays as it is
      st.notLoaded = `${f.name} was not loaded: ${over}. ` +
        "Remove examples or shorten them, or split the file and tune on a part." +
        (st.rows.length ? " The data below is unchanged." : "");
      drawSummary(); return;
    }
    st.general = []; st.rowMsgs = new Map(); st.warnings = []; st.columnMsgs = [];
    // the table becomes the server's reading of the file (validate), and the file is what is
    // uploaded at create until the table is edited
    Object.assign(st, { rows: [], header: null, columns: null, source: f, edited: false, ready: 0 });
    nameAfter(f);
    drawColumns(); drawTable();
    validate();
  }
  const input = $("#file");
  input.addEventListener("change", () => { takeFile(input.files[0]); input.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); input.click(); } });
  for (const e of ["dragenter", "dragover"]) drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  for (const e of ["dragleave", "drop"]) drop.addEventListener(e, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); takeFile(ev.dataTransfer.files[0]); });
  // Pasted text is read as a file would be (its format found by the server from its content).
  $("#paste-read").addEventListener("click", () => {
    const text = $("#paste-text").value;
    if (!text.trim()) return;
    const f = new File([text], "pasted data", { type: "text/plain" });
    f.pasted = true;
    takeFile(f);
  });

  // -- validation by the server -----------------------------------------------------------
  function addRowMsg(i, level, text, code = "") {
    if (!st.rowMsgs.has(i)) st.rowMsgs.set(i, []);
    st.rowMsgs.get(i).push({ level, text, code });
  }
  // Problems come as field violations: "examples[4].output" names the 5th row the server
  // read, "inputColumn" / "outputColumn" a column to choose; warnings name their rows in
  // "examples" (indexes of the same rows) and their kind in "code". sentRows maps those rows
  // to the table's: a file is sent as loaded (its rows are the table's, in order); the edited
  // table is sent as CSV, where a row with both cells empty is no example (the server skips
  // blank rows, as in a spreadsheet).
  let sentRows = [];
  const capital = (t) => t.charAt(0).toUpperCase() + t.slice(1);
  /** Warnings land on the rows they concern (several rows: listed above the table too). */
  function attachWarnings(warnings) {
    for (const w of warnings) {
      const title = WARNING_TITLES[w.code] || "Warning";
      const where = [...new Set((w.examples || []).map((k) => sentRows[k]).filter((i) => i !== undefined))];
      for (const i of where) addRowMsg(i, "warn", `${title}: ${w.message}`, w.code);
      if (where.length !== 1) st.warnings.push({ title, text: capital(w.message), code: w.code });
    }
  }
  function attachViolations(violations) {
    for (const v of violations) {
      const m = /^examples\[(\d+)\]/.exec(v.field || "");
      const row = m ? sentRows[Number(m[1])] : undefined;
      if (row !== undefined) addRowMsg(row, "bad", capital(v.description));
      else if (v.field === "inputColumn" || v.field === "outputColumn") {
        const kind = v.field === "inputColumn" ? "input" : "output";
        st.columnMsgs.push(st.header
          ? `Choose the ${kind} column above.`
          : `The examples have no ${kind} field the Studio can use: name it ${kind === "input" ? "text_input (or input, prompt)" : "output (or completion)"} in the file.`);
      } else st.general.push(capital(v.description));
    }
  }

  /** What goes to the server: the file as loaded (with the columns chosen), or the table once
   *  edited; ``sending`` maps the examples sent to the table's rows (null: the file's rows
   *  are the table's). */
  function dataToSend() {
    if (st.edited || !st.source) {
      const { blob, name } = toUpload(st.rows, (st.source?.name || "studio-data").replace(/\.[^.]+$/, ""));
      const csv = name.endsWith(".csv");
      return { blob, name, columns: null,
        sending: st.rows.map((_, i) => i).filter((i) => !csv || st.rows[i].input !== "" || st.rows[i].output !== "") };
    }
    return { blob: st.source, name: st.source.name, columns: st.columns, sending: null };
  }

  async function validate() {
    if (!st.rows.length && !st.source) { st.checking = false; st.ready = 0; drawSummary(); updateCreate(); return; }
    const seq = ++st.seq;
    st.checking = true; drawSummary(); updateCreate();
    const { blob, name, columns, sending } = dataToSend();
    let read = null, error = null;
    try { read = await readDataset(blob, name, columns); } catch (e) { error = e; }
    if (seq !== st.seq) return;
    st.checking = false; st.rowMsgs = new Map(); st.general = []; st.warnings = []; st.columnMsgs = [];
    st.ready = 0;
    if (read) {
      if (sending === null) {   // the file as loaded: the table is the server's reading of it
        st.rows = tableRows(read);
        st.header = read.columns || null;
        st.columns = read.columns ? { input: read.inputColumn || st.columns?.input || "", output: read.outputColumn || st.columns?.output || "" } : null;
        sentRows = st.rows.map((_, i) => i);
      } else sentRows = sending;
      attachViolations(read.fieldViolations);
      attachWarnings(read.warnings);
      if (!read.fieldViolations.length) st.ready = read.exampleCount;
    } else {
      st.general.push(error.status === 400 || error.status === 413 ? error.message : failure(error, "check the data"));
    }
    drawColumns(); drawTable(); drawSummary(); updateCreate();
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
    } else if (st.ready) {
      parts.push(html`<div class="notice ok" id="data-ok">✔ ${st.ready} examples checked by the server: ready to tune.</div>`);
    }
    if (!st.checking && st.warnings.length) {
      parts.push(html`<div class="notice warn" id="data-warnings"><b>Warnings</b> (the model can still be created):<ul>${st.warnings.map((w) => html`<li data-code="${w.code}"><b>${w.title}:</b> ${w.text}</li>`)}</ul></div>`);
    }
    render(box, html`${parts}`);
  }

  // -- settings and create ------------------------------------------------------------------
  const form = $("#settings");
  function hyperparameters() {
    const f = form.elements;
    // An empty field is left out of the request: the server chooses it from the examples.
    const hp = {};
    const problems = [];
    if (f.epochCount.value !== "" || f.epochCount.validity.badInput) {
      hp.epochCount = Number(f.epochCount.value);
      if (!Number.isInteger(hp.epochCount) || hp.epochCount < 1) problems.push("Epochs must be a whole number of at least 1 (or empty: automatic).");
    }
    if (f.batchSize.value !== "" || f.batchSize.validity.badInput) {
      hp.batchSize = Number(f.batchSize.value);
      if (!Number.isInteger(hp.batchSize) || hp.batchSize < 1) problems.push("Batch size must be a whole number of at least 1 (or empty: automatic).");
    }
    const mode = form.querySelector("input[name=lrMode]:checked").value;
    if (mode === "rate") {
      hp.learningRate = Number(f.learningRate.value);
      if (!(hp.learningRate > 0)) problems.push("The learning rate must be a positive number.");
    } else if (mode === "multiplier") {
      hp.learningRateMultiplier = Number(f.learningRateMultiplier.value);
      if (!(hp.learningRateMultiplier > 0)) problems.push("The multiplier must be a positive number.");
    }
    if (f.freeAnswers.checked) hp.answerLabels = false;
    return { hp, problems };
  }
  function updateCreate() {
    const { hp, problems } = hyperparameters();
    const n = st.rows.length;
    $("#steps").textContent = n && hp.batchSize > 0 && hp.epochCount > 0
      ? `With ${n} examples: ${Math.ceil(n / hp.batchSize)} × ${hp.epochCount} = ${Math.ceil(n / hp.batchSize) * hp.epochCount} steps.`
      : n && !problems.length ? "The steps are counted when the settings are chosen." : "";
    const hpErr = $("#hp-error");
    hpErr.hidden = !problems.length; hpErr.textContent = problems.join(" ");
    const name = $("#display-name").value.trim();
    const nameErr = $("#name-error");
    nameErr.hidden = name.length <= 40;
    nameErr.textContent = `The display name is ${name.length} characters; the limit is 40.`;
    let why = "";
    if (!n && st.header) why = "Choose the input and output columns of the file.";
    else if (!n && !st.source) why = "Add training data to continue.";
    else if (st.checking) why = "Waiting for the data check…";
    else if (!st.ready) {   // errors on rows are shown beside them; a file's own above the table
      const onRows = [...st.rowMsgs.values()].some((msgs) => msgs.some((m) => m.level === "bad"));
      why = onRows ? "Fix the data errors shown next to the rows." : "Fix the data errors shown under Training data.";
    }
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
    let file = null;
    try {
      // the data checked is uploaded now, and the model tuned on the upload
      const { blob, name, columns } = dataToSend();
      const data = new FormData();
      data.append("file", blob, name);
      if (columns?.input && columns?.output) {
        data.append("inputColumn", columns.input);
        data.append("outputColumn", columns.output);
      }
      file = await upload("files", data);
      const op = await post("tunedModels", {
        displayName: f.displayName.value.trim(),
        description: f.description.value.trim() || undefined,
        baseModel: f.baseModel.value,
        tuningTask: { hyperparameters: hp, trainingData: { file: file.name } },
      });
      const id = modelId(op.metadata.tunedModel);
      // the model page shows the settings chosen, with the reason for each, once
      sessionStorage.setItem("tunelab-created", JSON.stringify({
        model: op.metadata.tunedModel, choices: op.metadata.hyperparameterChoices || [] }));
      del(file.name).catch(() => {});   // the model keeps its own copy of the examples
      file = null;
      setLeaveGuard(null);   // the examples are the model's now
      toast("Tuning started");
      location.hash = `#/models/${id}`;
    } catch (e) {
      if (e.violations?.length) {
        st.rowMsgs = new Map(); st.general = []; st.columnMsgs = [];
        attachViolations(e.violations); drawColumns(); drawTable(); drawSummary();
        err.textContent = "The server found problems in the examples checked against the base model: fix the rows marked in the table.";
      } else err.textContent = e.status === 400 ? e.message : failure(e, "create the model");
      err.hidden = false;
    } finally {
      if (file) del(file.name).catch(() => {});   // not tuned on: nothing to keep
      st.creating = false; updateCreate();
    }
  });
  // Rows that are not a model yet are lost when the page is left: the router asks first.
  setLeaveGuard(() => (st.rows.length && !st.creating
    ? `The ${st.rows.length} example${st.rows.length === 1 ? "" : "s"} in the table ${st.rows.length === 1 ? "is" : "are"} not saved anywhere yet; leaving this page discards ${st.rows.length === 1 ? "it" : "them"}.`
    : null));
  drawSummary(); updateCreate();
}
