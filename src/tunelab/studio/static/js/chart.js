// The loss curve as SVG: one point per step (mean loss), dashed marks where finished epochs
// end, the selected epoch's mark in green, an unfinished epoch as a band, and the validation
// loss after each scored epoch (diamonds on a dashed line) on the same axes, so where the two
// curves part (over-fitting) is seen at a glance. Our own code; no chart library.

const NS = "http://www.w3.org/2000/svg";
const el = (tag, attrs = {}, text) => {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

function niceTicks(lo, hi, n = 5) {
  if (hi - lo < 1e-9) { hi = lo + 1; }
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

/** snapshots: [{step, epoch, meanLoss}]; totalSteps: the x range; selectedEpoch: or null;
 *  stepsPerEpoch: the planned steps of one epoch; running: whether tuning goes on;
 *  validation: [{epoch, step, loss}], the validation loss at the end of scored epochs;
 *  refit: {from, label} when a refit on every example follows the epochs from step `from`
 *  (its steps are drawn as a curve of their own in a band, not as epochs). */
export function lossChart(allSnapshots, { totalSteps = 0, selectedEpoch = null, stepsPerEpoch = 0, running = false, width = 720, validation = [], refit = null } = {}) {
  const snapshots = refit ? allSnapshots.filter((s) => s.step < refit.from) : allSnapshots;
  const refitSteps = refit ? allSnapshots.filter((s) => s.step >= refit.from) : [];
  const refitRunning = running && refitSteps.length > 0;
  // Drawn at the container's width (320-720 units), so the text stays legible on a phone.
  const W = Math.round(Math.min(720, Math.max(320, width || 720)));
  const H = W < 500 ? 230 : 280, L = 46, R = 14, T = 16, B = 40;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": "chart-title" });
  const valText = validation.length ? `; validation loss ${validation.map((v) => `epoch ${v.epoch} ${v.loss.toFixed(4)}`).join(", ")}` : "";
  const refitText = refitSteps.length ? `; ${refit.label}: ${refitSteps.length} steps, last loss ${refitSteps[refitSteps.length - 1].meanLoss.toFixed(4)}` : "";
  svg.appendChild(el("title", { id: "chart-title" },
    snapshots.length ? `Mean loss per step: ${snapshots.length} steps, last loss ${snapshots[snapshots.length - 1].meanLoss.toFixed(4)}${valText}${refitText}` : "No steps yet"));
  const maxStep = Math.max(totalSteps, allSnapshots.length ? allSnapshots[allSnapshots.length - 1].step : 1, 1);
  const losses = [...allSnapshots.map((s) => s.meanLoss), ...(snapshots.length ? validation.map((v) => v.loss) : [])];
  let lo = losses.length ? Math.min(...losses) : 0, hi = losses.length ? Math.max(...losses) : 1;
  const pad = (hi - lo) * 0.08 || 0.5;
  lo = Math.max(0, lo - pad); hi += pad;
  const x = (step) => L + ((step - (maxStep > 1 ? 1 : 0)) / Math.max(1, maxStep - (maxStep > 1 ? 1 : 0))) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);

  const axes = el("g");
  for (const v of niceTicks(lo, hi)) {
    axes.appendChild(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    axes.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, v.toString()));
  }
  for (const v of niceTicks(1, maxStep, W < 500 ? 4 : 6).filter((s) => s >= 1 && Number.isInteger(s))) {
    axes.appendChild(el("text", { x: x(v), y: H - B + 16, "text-anchor": "middle", class: "tick" }, String(v)));
  }
  axes.appendChild(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  axes.appendChild(el("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  axes.appendChild(el("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "tick" }, "step"));
  axes.appendChild(el("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", class: "tick",
    transform: `rotate(-90 12 ${(T + H - B) / 2})` }, "mean loss"));
  svg.appendChild(axes);

  // Epoch marks. A finished epoch gets a dashed end mark after its last step; the epoch still
  // running (or cut short by a cancel) is drawn as a band over the steps it has, labelled as
  // such: its latest step is not its end. While tuning runs, the planned ends of the epochs to
  // come are drawn faintly where they will be.
  const lastEpoch = snapshots.length ? snapshots[snapshots.length - 1].epoch : 0;
  const lastStep = snapshots.length ? snapshots[snapshots.length - 1].step : 0;
  const ends = new Map();
  for (const s of snapshots) ends.set(s.epoch, s.step);
  const finished = (e) => e < lastEpoch || (stepsPerEpoch > 0 && ends.get(e) >= e * stepsPerEpoch);
  const marks = el("g", { class: "epochs" });
  const done = [...ends.entries()].filter(([e]) => finished(e)).sort((a, b) => a[0] - b[0]);
  const planned = [];
  const epochsEnd = refit ? refit.from - 1 : maxStep;
  if (running && !refitRunning && stepsPerEpoch > 0) {
    for (let e = lastEpoch || 1; e * stepsPerEpoch <= epochsEnd; e++) if (!finished(e)) planned.push([e, e * stepsPerEpoch]);
  }
  // The band of the epoch still running (or cut short) and its label, placed first so the
  // finished epochs' labels make room for it: at the band's start, or where the band ends near
  // the right edge, ending at the edge.
  const textWidth = (text) => text.length * 6.5 + 4;
  let band = null;
  if (snapshots.length && !finished(lastEpoch)) {
    const from = ends.has(lastEpoch - 1) ? ends.get(lastEpoch - 1) : (stepsPerEpoch ? (lastEpoch - 1) * stepsPerEpoch : 0);
    const x0 = from > 0 ? x(from) : L, x1 = Math.max(x(lastStep), x0 + 2);
    const word = running ? "running" : "partial";
    const text = `E${lastEpoch} ${word}`, width = textWidth(text);
    const atStart = W - R - x0 >= width;
    band = { from, x0, x1, word, text, anchor: atStart ? "start" : "end",
      tx: atStart ? x0 + 3 : W - R - 2, lo: atStart ? x0 : W - R - 2 - width, hi: atStart ? x0 + width : W - R };
  }
  const clearOfBand = (px, epoch) => !band || px - 3 <= band.lo || px - 3 - textWidth(`E${epoch}`) >= band.hi;
  // Many epochs close together: a mark only where it is >= 8 px from the previous one, and a
  // label only where it has room (>= 30 px); the selected epoch's always.
  const selX = done.some(([e]) => e === selectedEpoch) ? x(ends.get(selectedEpoch)) : null;
  const roomy = (px, lastPx, gap) => (lastPx === null || px - lastPx >= gap) && (selX === null || Math.abs(px - selX) >= gap);
  let lineX = null, labelX = null;
  for (const [epoch, step] of done) {
    const px = x(step);
    const sel = epoch === selectedEpoch ? " selected" : "";
    if (!sel && !roomy(px, lineX, 8)) continue;
    marks.appendChild(el("line", { x1: px, x2: px, y1: T, y2: H - B, class: `epoch${sel}`, "data-epoch": epoch }));
    if (!sel) lineX = px;
    if (sel || (roomy(px, labelX, 30) && clearOfBand(px, epoch))) {
      marks.appendChild(el("text", { x: px - 3, y: T + 10, "text-anchor": "end", class: `epoch-label${sel}` }, `E${epoch}`));
      if (!sel) labelX = px;
    }
  }
  if (band) {
    const rect = el("rect", { x: band.x0, y: T, width: band.x1 - band.x0, height: H - B - T, class: `epoch-partial ${band.word}`, "data-epoch": lastEpoch });
    rect.appendChild(el("title", {}, `Epoch ${lastEpoch}, ${band.word}: ${lastStep - band.from} of ${stepsPerEpoch || "?"} steps`));
    marks.appendChild(rect);
    // only the selected epoch's label, always drawn, can take the band label's place
    const selClear = selX === null || clearOfBand(selX, selectedEpoch);
    if (band.lo >= L && selClear) {
      marks.appendChild(el("text", { x: band.tx, y: T + 10, "text-anchor": band.anchor, class: "epoch-label partial", "data-epoch": lastEpoch }, band.text));
    }
  }
  let plannedX = null;
  for (const [epoch, step] of planned) {
    const px = x(step);
    if (!roomy(px, plannedX, 8)) continue;
    marks.appendChild(el("line", { x1: px, x2: px, y1: T, y2: H - B, class: "epoch-planned", "data-epoch": epoch }));
    plannedX = px;
  }
  svg.appendChild(marks);

  if (refit && refit.from <= maxStep) {
    // the refit's band, from its first step to the end: a second run, so a curve of its own
    const x0 = x(Math.max(1, refit.from - 0.5));
    const g = el("g", { class: "refit", "data-refit-from": refit.from });
    g.appendChild(el("rect", { x: x0, y: T, width: Math.max(2, W - R - x0), height: H - B - T, class: "refit-band" }));
    g.appendChild(el("line", { x1: x0, x2: x0, y1: T, y2: H - B, class: "refit-start" }));
    const text = refit.label + (refitRunning ? " (running)" : "");
    const fits = W - R - x0 >= textWidth(text);
    g.appendChild(el("text", { x: fits ? x0 + 3 : W - R - 2, y: T + 24, "text-anchor": fits ? "start" : "end", class: "epoch-label refit-label" }, text));
    svg.appendChild(g);
  }
  if (refitSteps.length) {
    svg.appendChild(el("polyline", { class: "line refit-line", points: refitSteps.map((s) => `${x(s.step).toFixed(1)},${y(s.meanLoss).toFixed(1)}`).join(" ") }));
  }
  if (allSnapshots.length) {
    if (snapshots.length) svg.appendChild(el("polyline", { class: "line", points: snapshots.map((s) => `${x(s.step).toFixed(1)},${y(s.meanLoss).toFixed(1)}`).join(" ") }));
    const pts = el("g", { class: "points" });
    const r = allSnapshots.length > 120 ? 1.5 : 3;
    for (const s of allSnapshots) {
      const c = el("circle", { cx: x(s.step).toFixed(1), cy: y(s.meanLoss).toFixed(1), r, class: "pt", "data-step": s.step, "data-epoch": s.epoch });
      c.appendChild(el("title", {}, `step ${s.step} · ${refit && s.step >= refit.from ? "refit" : `epoch ${s.epoch}`} · loss ${s.meanLoss.toFixed(4)}`));
      pts.appendChild(c);
    }
    svg.appendChild(pts);
  }
  if (snapshots.length && validation.length) {
    const val = el("g", { class: "validation" });
    const pts = validation.map((v) => [x(v.step), y(v.loss), v]);
    if (pts.length > 1) val.appendChild(el("polyline", { class: "val-line", points: pts.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ") }));
    for (const [px, py, v] of pts) {
      const d = el("path", { d: `M${px.toFixed(1)} ${(py - 5).toFixed(1)} l5 5 l-5 5 l-5 -5 z`, class: "val-pt", "data-epoch": v.epoch, "data-step": v.step });
      d.appendChild(el("title", {}, `validation loss after epoch ${v.epoch}: ${v.loss.toFixed(4)}`));
      val.appendChild(d);
    }
    svg.appendChild(val);
  }
  return svg;
}
