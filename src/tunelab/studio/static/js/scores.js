// Scores as the evaluation API reports them (docs/evaluation.md), worded for the Studio's
// tables: the model page's epoch table and the compare page.

/** The score that ranks epochs and models: accuracy for label-like outputs, exact match for
 *  short values (a date, an amount, a name), token F1 for other free text. */
export function metricName(metric) {
  if (metric === "tokenF1") return "Token F1";
  return metric === "exactMatch" ? "Exact match" : "Accuracy";
}

/** The other score a table shows beside the metric: exact match, or token F1 beside exact
 *  match ({name, key}: its heading and its field in the scores). */
export function otherScore(metric) {
  return metric === "exactMatch" ? { name: "Token F1", key: "tokenF1" } : { name: "Exact match", key: "exactMatch" };
}

/** A score from 0 to 1 as the table shows it; "—" when there is none. */
export function fmtScore(v) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(3) : "—";
}
