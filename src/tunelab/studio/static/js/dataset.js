// Training data as the server reads it. The Studio does not parse datasets: a file, pasted
// text or the edited table goes to POST /studio/datasets:preview (data/parse.py, the parser
// of uploads and create requests), which answers every row as read, labelled the way the
// server names it ("row 7", "line 3", "example 2"), its problems as field violations
// ("examples[6].output") and its warnings with a code and the rows they concern.
import { previewDataset } from "./api.js";

// The server's limits (GET /studio/limits: the forms' fields, and datasetFile, the largest
// data file it reads), asked once for every page that imports this module; null if unread.
export const limits = fetch("/studio/limits", { credentials: "same-origin" })
  .then((r) => (r.ok ? r.json() : null)).catch(() => null);

const mb = (n) => `${Number((n / 2 ** 20).toFixed(1))} MB`;

/** Why ``blob`` is refused before it is read or sent ("it is 5.2 MB and the limit is 4 MB"),
 *  or "" when it is within the server's file limit (or the limits could not be read: the
 *  server then refuses a file over it itself). */
export async function overLimit(blob) {
  const max = (await limits)?.datasetFile?.maxBytes;
  return max != null && blob.size > max ? `it is ${mb(blob.size)} and the limit is ${mb(max)}` : "";
}

/** The server's reading of ``blob`` as a file named ``name``; ``columns`` ({input, output})
 *  chooses a CSV's columns. */
export function readDataset(blob, name, columns = null) {
  const form = new FormData();
  form.append("file", blob, name);
  if (columns?.input && columns?.output) {
    form.append("inputColumn", columns.input);
    form.append("outputColumn", columns.output);
  }
  return previewDataset(form);
}

/** A preview's rows as the table's: {input, output, system, label}. */
export function tableRows(preview) {
  return preview.rows.map((r) => ({ input: r.textInput, output: r.output, system: r.systemInstruction, label: r.source }));
}

/** Rows pasted from a spreadsheet (tab-separated text) as a TSV file for the server to read,
 *  under the header it expects; null when the text holds no tab (it is not rows). */
export function pastedFile(text) {
  if (!text.includes("\t")) return null;
  return new Blob([`text_input\toutput\n${text}`], { type: "text/tab-separated-values" });
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
