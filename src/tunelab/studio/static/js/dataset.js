// Reading training data in the browser for the editable table. The server stays the judge
// of validity (every upload is parsed and validated by POST /v1beta/files); this only turns a
// file into rows labelled the way the server names them ("row 7", "line 3", "example 2").

export const MAX_BYTES = 4 * 1024 * 1024;
// Column names as the server accepts them (data/parse.py), compared the same way: case,
// spaces, "_" and "-" do not matter ("Text Input" is text_input).
const INPUT_KEYS = ["textinput", "input", "prompt"];
const OUTPUT_KEYS = ["output", "completion"];
const norm = (name) => String(name).replace(/[\s_-]/g, "").toLowerCase();

/** CSV records as Python's csv.reader yields them (a blank line is an empty record). */
export function csvRecords(text, delimiter) {
  const records = [];
  let rec = [], cell = "", quoted = false, i = 0, started = false;
  const endCell = () => { rec.push(cell); cell = ""; };
  const endRec = () => { if (started || rec.length) endCell(); records.push(started || rec.length > 0 ? rec : []); rec = []; started = false; };
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i++; continue; }
      cell += c; i++; continue;
    }
    if (c === '"' && cell === "") { quoted = true; started = true; i++; continue; }
    if (c === delimiter) { endCell(); started = true; i++; continue; }
    if (c === "\r" || c === "\n") {
      endRec();
      i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
      continue;
    }
    cell += c; started = true; i++;
  }
  if (started || rec.length || cell) endRec();
  return records;
}

/** The index of the one name in ``names`` that is one of ``keys``; -1 when none is, or when
 *  several are (the server refuses to guess between them too). */
function pick(keys, names) {
  const found = names.map((n, j) => (keys.includes(norm(n)) ? j : -1)).filter((j) => j >= 0);
  return found.length === 1 ? found[0] : -1;
}

/** {rows: [{input, output, label}], header, columns} from a file's text. For a CSV,
 *  ``header`` lists its columns and ``columns`` the chosen {input, output} names (given, or
 *  found by name); rows are empty until both are known: the Studio never guesses which
 *  column is which. */
export function parseText(text, filename, chosen = null) {
  text = text.replace(/^\uFEFF/, "");
  const ext = (filename.split(".").pop() || "").toLowerCase();
  if (ext === "jsonl" || ext === "ndjson") return parseJsonl(text);
  if (ext === "json") {
    try { return parseJson(JSON.parse(text)); } catch { return parseJsonl(text); }
  }
  return parseCsv(text, chosen);
}

function parseCsv(text, chosen) {
  const first = text.replace(/^[\r\n]+/, "").split(/\r?\n/, 1)[0] || "";
  const delim = first.includes(",") ? "," : first.includes("\t") ? "\t" : first.includes(";") ? ";" : ",";
  const recs = csvRecords(text, delim);
  let h = recs.findIndex((r) => r.some((c) => c.trim()));
  if (h < 0) return { rows: [] };
  const header = recs[h].map((c) => c.trim());
  const ii = chosen ? header.indexOf(chosen.input) : pick(INPUT_KEYS, header);
  const oi = chosen ? header.indexOf(chosen.output) : pick(OUTPUT_KEYS, header);
  const columns = { input: ii >= 0 ? header[ii] : "", output: oi >= 0 ? header[oi] : "" };
  if (ii < 0 || oi < 0 || ii === oi) return { rows: [], header, columns };
  const rows = [];
  for (let r = h + 1; r < recs.length; r++) {
    const rec = recs[r];
    if (!rec.length || !rec.some((c) => c !== "")) continue;
    rows.push({ input: rec[ii] ?? "", output: rec[oi] ?? "", label: `row ${r + 1}` });
  }
  return { rows, header, columns };
}

/** The text of a chat message's content: a string, OpenAI's text parts or Gemini's parts. */
function chatText(content) {
  if (typeof content === "string") return content;
  const parts = Array.isArray(content) ? content : content?.parts;
  return Array.isArray(parts) ? parts.map((p) => (typeof p?.text === "string" ? p.text : "")).join("") : "";
}

/** A chat-format record (OpenAI "messages" / Gemini "contents") as a row; the server checks
 *  that it is single-turn and names any problem. */
function fromChat(rec, label) {
  const turns = Array.isArray(rec.messages) ? rec.messages : Array.isArray(rec.contents) ? rec.contents : [];
  const sys = [];
  const sysInstr = rec.systemInstruction ?? rec.system_instruction;
  if (sysInstr !== undefined) sys.push(chatText(sysInstr));
  const convo = [];
  for (const m of turns) {
    const text = chatText(m?.content ?? m?.parts);
    if ((m?.role === "system" || m?.role === "developer") && !convo.length) sys.push(text);
    else convo.push(text);
  }
  return { input: convo[0] ?? "", output: convo[1] ?? "", system: sys.length ? sys.join("\n\n") : undefined, label };
}

function fromRecord(rec, label) {
  if (Array.isArray(rec)) return { input: String(rec[0] ?? ""), output: String(rec[1] ?? ""), label };
  if (!rec || typeof rec !== "object") return { input: String(rec ?? ""), output: "", label };
  const keys = Object.keys(rec);
  const ii = pick(INPUT_KEYS, keys), oi = pick(OUTPUT_KEYS, keys);
  if (ii < 0 && oi < 0 && (rec.messages || rec.contents)) return fromChat(rec, label);
  const val = (j) => (j < 0 ? "" : typeof rec[keys[j]] === "string" ? rec[keys[j]] : JSON.stringify(rec[keys[j]] ?? ""));
  return { input: val(ii), output: val(oi), label };
}

function parseJsonl(text) {
  const rows = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    let rec;
    try { rec = JSON.parse(line); } catch { rec = { text_input: line, output: "" }; }
    rows.push(fromRecord(rec, `line ${i + 1}`));
  });
  return { rows };
}

function parseJson(value) {
  let list = value;
  if (value && !Array.isArray(value) && typeof value === "object") {
    list = value.examples?.examples || value.examples || value.trainingData?.examples?.examples;
    if (!list && Array.isArray(value.text_input || value.textInput)) {
      const ins = value.text_input || value.textInput;
      list = ins.map((x, i) => ({ text_input: x, output: (value.output || [])[i] }));
    }
  }
  if (!Array.isArray(list)) return { rows: [] };
  return { rows: list.map((rec, i) => fromRecord(rec, `example ${i + 1}`)) };
}

/** The table as a file to upload: CSV, or chat-format JSONL when rows carry system prompts
 *  (a CSV has no place for them). */
export function toUpload(rows, baseName) {
  if (!rows.some((r) => r.system !== undefined)) {
    return { blob: new Blob([toCsv(rows)], { type: "text/csv" }), name: `${baseName}.csv` };
  }
  const lines = rows.map((r) => JSON.stringify({ messages: [
    ...(r.system !== undefined ? [{ role: "system", content: r.system }] : []),
    { role: "user", content: r.input }, { role: "assistant", content: r.output }] }));
  return { blob: new Blob([lines.join("\n") + "\n"], { type: "application/jsonl" }), name: `${baseName}.jsonl` };
}

/** The table as a CSV file (header text_input,output), every value quoted. */
export function toCsv(rows) {
  const q = (s) => `"${String(s).replace(/"/g, '""')}"`;
  return ["text_input,output", ...rows.map((r) => `${q(r.input)},${q(r.output)}`)].join("\r\n") + "\r\n";
}

/** Rows named in a server message: [{kind: "row"|"line"|"example", n}] */
export function locations(message) {
  const out = [];
  const re = /\b(rows?|lines?|examples?) (\d+(?:(?:, | and )\d+)*)/g;
  let m;
  while ((m = re.exec(message))) {
    const kind = m[1].replace(/s$/, "");
    for (const n of m[2].split(/, | and /)) out.push({ kind, n: Number(n) });
  }
  return out;
}

/** Splits a spreadsheet paste (tab-separated) into [input, output] pairs, or null. */
export function pastedRows(text) {
  if (!text.includes("\t")) return null;
  return csvRecords(text, "\t").filter((r) => r.some((c) => c.trim())).map((r) => [r[0] ?? "", r[1] ?? ""]);
}
