// The loss curve as SVG: one point per step (mean loss), dashed marks where epochs end,
// the selected epoch's mark in green. Our own code; no chart library.

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

/** snapshots: [{step, epoch, meanLoss}]; totalSteps: the x range; selectedEpoch: or null. */
export function lossChart(snapshots, { totalSteps = 0, selectedEpoch = null, stepsPerEpoch = 0, width = 720 } = {}) {
  // Drawn at the container's width (320-720 units), so the text stays legible on a phone.
  const W = Math.round(Math.min(720, Math.max(320, width || 720)));
  const H = W < 500 ? 230 : 280, L = 46, R = 14, T = 16, B = 40;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": "chart-title" });
  svg.appendChild(el("title", { id: "chart-title" },
    snapshots.length ? `Mean loss per step: ${snapshots.length} steps, last loss ${snapshots[snapshots.length - 1].meanLoss.toFixed(4)}` : "No steps yet"));
  const maxStep = Math.max(totalSteps, snapshots.length ? snapshots[snapshots.length - 1].step : 1, 1);
  const losses = snapshots.map((s) => s.meanLoss);
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

  // Epoch marks: after the last step of each epoch (known from the snapshots, or planned).
  const ends = new Map();
  for (const s of snapshots) ends.set(s.epoch, s.step);
  if (stepsPerEpoch) for (let e = 1; e * stepsPerEpoch <= maxStep; e++) if (!ends.has(e)) ends.set(e, e * stepsPerEpoch);
  const marks = el("g", { class: "epochs" });
  const sorted = [...ends.entries()].sort((a, b) => a[0] - b[0]);
  // Many epochs: mark every k-th one so marks stay >= 8 px and labels >= 30 px apart.
  const gap = sorted.length > 1 ? (W - L - R) / sorted.length : W;
  const lineEvery = Math.max(1, Math.ceil(8 / gap));
  const labelEvery = Math.max(1, Math.ceil(30 / gap));
  for (const [epoch, step] of sorted) {
    const sel = epoch === selectedEpoch ? " selected" : "";
    const last = epoch === sorted[sorted.length - 1][0];
    if (!sel && !last && epoch % lineEvery) continue;
    marks.appendChild(el("line", { x1: x(step), x2: x(step), y1: T, y2: H - B, class: `epoch${sel}`, "data-epoch": epoch }));
    if (sel || epoch % labelEvery === 0 || labelEvery === 1) {
      marks.appendChild(el("text", { x: x(step) - 3, y: T + 10, "text-anchor": "end", class: `epoch-label${sel}` }, `E${epoch}`));
    }
  }
  svg.appendChild(marks);

  if (snapshots.length) {
    svg.appendChild(el("polyline", { class: "line", points: snapshots.map((s) => `${x(s.step).toFixed(1)},${y(s.meanLoss).toFixed(1)}`).join(" ") }));
    const pts = el("g", { class: "points" });
    const r = snapshots.length > 120 ? 1.5 : 3;
    for (const s of snapshots) {
      const c = el("circle", { cx: x(s.step).toFixed(1), cy: y(s.meanLoss).toFixed(1), r, class: "pt", "data-step": s.step, "data-epoch": s.epoch });
      c.appendChild(el("title", {}, `step ${s.step} · epoch ${s.epoch} · loss ${s.meanLoss.toFixed(4)}`));
      pts.appendChild(c);
    }
    svg.appendChild(pts);
  }
  return svg;
}
