// Compare: one set of test examples (a file, or rows pasted from a spreadsheet) answered by a
// tuned model, its base model and other tuned models, through POST …/tunedModels/ID:evaluate.
// Scores, exact match and latency side by side, then the examples whose answers differ. Any
// role that may call the model may compare it (the server checks every model named).
import { get, post, listAll } from "./api.js";
import { html, render, within, failure, modelId, debounce } from "./util.js";
import { overLimit, readDataset, tableRows, pastedFile } from "./dataset.js";
import { fmtScore, metricName, otherScore } from "./scores.js";

const MAX_EXAMPLES = 100;  // the server scores at most this many per request
const MAX_OTHERS = 4;      // compareWith: at most 4 other models

export async function show(main, id) {
  const [$, $$] = within(main);
  const name = `tunedModels/${id}`;
  const model = await get(name);
  document.title = `Compare ${model.displayName || id} · tunelab Studio`;
  const others = (await listAll("tunedModels", "tunedModels").catch(() => []))
    .filter((m) => m.name !== name && m.state === "ACTIVE");
  let rows = [];          // [{input, output}] to score
  let source = "";        // where they came from, in words
  let running = false;

  const label = (m) => `${m.displayName || modelId(m.name)}`;
  render(main, html`
    <div class="page-head"><div>
      <p class="sub small"><a href="#/library">My Library</a> › <a href="#/models/${id}">${model.displayName || id}</a> ›</p>
      <h1>Compare on test data</h1>
      <p class="sub">The same examples, answered by each model: scores, exact matches, the time per answer, and the answers that differ.</p>
    </div></div>
    <div class="grid2">
      <section class="panel" aria-labelledby="td-h">
        <h2 id="td-h">1. Test examples</h2>
        <p class="hint">Use examples the model was not tuned on. At most ${MAX_EXAMPLES} are scored; answers are the most likely ones (temperature 0).</p>
        <label class="drop" id="drop" tabindex="0">
          <input type="file" id="test-file" accept=".csv,.tsv,.json,.jsonl,.ndjson,text/csv,application/json">
          <strong>Choose a test file</strong> (CSV, JSON or JSONL, as for training)
        </label>
        <label class="field" style="margin-top:.8rem">Or paste rows <span class="hint">Two columns copied from a spreadsheet, input and expected output (separated by a tab), one example a line.</span>
          <textarea id="pasted" rows="4" placeholder="item 7&#9;odd"></textarea></label>
        <div id="data-note" role="status"></div>
      </section>
      <form class="panel" id="models" aria-labelledby="mo-h">
        <h2 id="mo-h">2. Models</h2>
        <ul class="pick">
          <li><label><input type="checkbox" checked disabled> ${label(model)} <span class="muted small">(this model)</span></label></li>
          <li><label><input type="checkbox" name="other" value="${model.baseModel}" checked> ${model.baseModel.replace(/^models\//, "")} <span class="muted small">(its base model, before tuning)</span></label></li>
          ${others.map((m) => html`<li><label><input type="checkbox" name="other" value="${m.name}"> ${label(m)} <span class="muted small">${m.name}</span></label></li>`)}
        </ul>
        <p class="hint" id="pick-note">Up to ${MAX_OTHERS} models besides this one.</p>
        <div class="notice bad" id="compare-error" role="alert" hidden></div>
        <button class="btn" type="submit" id="run-compare" disabled>Compare</button>
        <p class="hint" id="run-why">Add test examples first.</p>
      </form>
    </div>
    <section class="panel" aria-labelledby="res-h" id="results-panel" hidden>
      <h2 id="res-h">Results</h2>
      <div id="results" aria-live="polite"></div>
    </section>`);

  function note(text, bad = false) {
    render($("#data-note"), text ? html`<div class="notice ${bad ? "bad" : "ok"}" id="${bad ? "data-bad" : "data-ready"}">${text}</div>` : "");
  }
  function take(list, from) {
    const usable = list.filter((r) => r.input.trim() && r.output.trim());
    const skipped = list.length - usable.length;
    rows = usable.slice(0, MAX_EXAMPLES);
    source = from;
    if (!rows.length) { note(`No example with both an input and an output in ${from}.`, true); update(); return; }
    const extra = usable.length > MAX_EXAMPLES ? ` The first ${MAX_EXAMPLES} of ${usable.length} are scored.` : "";
    const skip = skipped ? ` ${skipped} row${skipped === 1 ? "" : "s"} without an input or an output ${skipped === 1 ? "is" : "are"} left out.` : "";
    note(`✔ ${rows.length} test example${rows.length === 1 ? "" : "s"} from ${from}.${extra}${skip}`);
    update();
  }
  function update() {
    const picked = $$("input[name=other]:checked").length;
    for (const box of $$("input[name=other]")) box.disabled = running || (!box.checked && picked >= MAX_OTHERS);
    const why = running ? "Scoring… each model answers every example." : !rows.length ? "Add test examples first." : "";
    $("#run-compare").disabled = Boolean(why);
    $("#run-why").textContent = why;
  }

  const file = $("#test-file");
  async function takeFile(f) {
    if (!f) return;
    $("#pasted").value = "";
    // bounded before it is read: a test file is at most as large as a training file
    const over = await overLimit(f);
    if (over) { rows = []; note(`${f.name} was not read: ${over}. ${MAX_EXAMPLES} examples are enough to compare models.`, true); update(); return; }
    // read by the server, as training data is (the Studio has no parser of its own)
    let read;
    try { read = await readDataset(f, f.name); } catch (e) { rows = []; note(failure(e, "read the file"), true); update(); return; }
    if (read.columns && !read.rows.length) {
      rows = [];
      note(`${f.name} has the columns ${read.columns.join(", ")}: name the input column text_input (or input, prompt) and the output column output (or completion).`, true);
      update();
      return;
    }
    if (!read.rows.length) { rows = []; note(`${f.name} could not be read: ${read.fieldViolations.map((v) => v.description).join("; ")}.`, true); update(); return; }
    take(tableRows(read), f.name);
  }
  file.addEventListener("change", () => { takeFile(file.files[0]); file.value = ""; });
  $("#drop").addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); file.click(); } });
  let pasteSeq = 0;
  const readPasted = debounce(async () => {
    const seq = ++pasteSeq;
    const text = $("#pasted").value;
    if (!text.trim()) { rows = []; note(""); update(); return; }
    const blob = pastedFile(text);
    if (!blob) { rows = []; note("Paste two columns, input and expected output, separated by a tab (as a spreadsheet copies them).", true); update(); return; }
    const over = await overLimit(blob);
    if (seq !== pasteSeq) return;
    if (over) { rows = []; note(`The pasted rows were not read: ${over}. ${MAX_EXAMPLES} examples are enough to compare models.`, true); update(); return; }
    let read;
    try { read = await readDataset(blob, "pasted rows.tsv"); } catch (e) { if (seq === pasteSeq) { rows = []; note(failure(e, "read the pasted rows"), true); update(); } return; }
    if (seq === pasteSeq) take(tableRows(read), "the pasted rows");
  }, 300);
  $("#pasted").addEventListener("input", () => { rows = []; update(); readPasted(); });
  $("#models").addEventListener("change", update);

  $("#models").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if ($("#run-compare").disabled) return;
    const compareWith = $$("input[name=other]:checked").map((b) => b.value);
    const err = $("#compare-error");
    err.hidden = true;
    running = true; update();
    $("#results-panel").hidden = false;
    render($("#results"), html`<p class="muted"><span class="spinner"></span> Scoring ${rows.length} example${rows.length === 1 ? "" : "s"} on ${compareWith.length + 1} model${compareWith.length ? "s" : ""}…</p>`);
    try {
      const out = await post(`${name}:evaluate`, {
        testData: { examples: { examples: rows.map((r) => ({ textInput: r.input, output: r.output })) } },
        compareWith,
      });
      drawResults(out);
    } catch (e) {
      $("#results-panel").hidden = true;
      err.textContent = e.status === 400 ? `Could not compare: ${e.message}`
        : e.status === 404 ? "Could not compare: one of the models no longer exists, or it is no longer shared with you. Reload the page to see the models you can use."
          : failure(e, "compare the models");
      err.hidden = false;
    } finally { running = false; update(); }
  });

  const nameOf = (m) => (m === name ? `${label(model)} (this model)` : m === model.baseModel ? `${m.replace(/^models\//, "")} (base)` : label(others.find((o) => o.name === m) || { name: m }));
  const same = (a, b) => String(a).trim() === String(b).trim();

  function drawResults(out) {
    const metric = metricName(out.metric);
    const other = otherScore(out.metric);
    const best = Math.max(...out.results.map((r) => r.score));
    const models = out.results.map((r) => r.model);
    render($("#results"), html`
      <p class="hint">${out.exampleCount} example${out.exampleCount === 1 ? "" : "s"} from ${source}. ${out.metricNote}</p>
      <div class="epochs-wrap"><table class="list" id="scores"><thead><tr><th>Model</th><th>${metric}</th><th>${other.name}</th><th>Time per answer</th></tr></thead><tbody>
      ${out.results.map((r) => html`<tr data-model="${r.model}" class="${r.score === best ? "best" : ""}">
        <td>${nameOf(r.model)}${r.score === best && out.results.length > 1 ? html` <span class="best-mark">★ best</span>` : ""}</td>
        <td data-label="${metric}" class="mono score">${fmtScore(r.score)}</td>
        <td data-label="${other.name}" class="mono">${fmtScore(r[other.key])}</td>
        <td data-label="Time per answer" class="mono">${Math.round(r.meanLatencyMs)} ms</td></tr>`)}
      </tbody></table></div>
      ${out.results.filter((r) => r.askedAs).map((r) => html`<p class="hint asked-as">${nameOf(r.model)} was asked as ${nameOf(r.askedAs)} is, with ${r.askedWith}, as the scores of each epoch ask a base model: its score is what those rules give a model that was not tuned.</p>`)}
      ${out.results.filter((r) => r.unreachableNote).map((r) => html`<div class="notice warn unreachable" role="status">${nameOf(r.model)}: ${r.unreachableNote} To let a model answer freely, create it again with <strong>Free answers</strong> ticked under Advanced settings.</div>`)}
      <h3>Answers that differ</h3>
      ${out.differences.length ? html`
        <p class="hint">${out.differingCount > out.differences.length ? `The first ${out.differences.length} of ${out.differingCount} examples` : `${out.differingCount} example${out.differingCount === 1 ? "" : "s"}`} where the models answer differently, those ${nameOf(models[0])} answers wrongly first; ✔ marks an answer equal to the expected output.</p>
        <div class="diff-wrap"><table class="list small" id="differences"><thead><tr><th>Input</th><th>Expected</th>${models.map((m) => html`<th>${nameOf(m)}</th>`)}</tr></thead><tbody>
        ${out.differences.map((d) => {
          const by = new Map(d.answers.map((a) => [a.model, a.text]));
          return html`<tr><td data-label="Input">${d.textInput}</td><td data-label="Expected" class="mono">${d.expected}</td>
            ${models.map((m) => {
              const text = by.get(m) ?? "";
              const right = same(text, d.expected);
              return html`<td data-label="${nameOf(m)}" class="mono ${right ? "right" : "bad-answer"}">${right ? "✔ " : ""}${text === "" ? "(an empty answer)" : text}</td>`;
            })}</tr>`;
        })}</tbody></table></div>`
      : html`<p class="muted" id="no-differences">Every model gave the same answer to every example.</p>`}`);
  }
  update();
}
