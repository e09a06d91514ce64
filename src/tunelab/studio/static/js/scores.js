// Scores as the evaluation API reports them (docs/evaluation.md), worded for the Studio's
// tables: the model page's epoch table and the compare page.

/** The score that ranks epochs and models: accuracy for label-like outputs, token F1 for
 *  free text. */
export function metricName(metric) {
  return metric === "tokenF1" ? "Token F1" : "Accuracy";
}

/** A score from 0 to 1 as the table shows it; "—" when there is none. */
export function fmtScore(v) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(3) : "—";
}
