/**
 * Static SVG line plots for reports: no JavaScript, readable in any browser or markdown viewer.
 * Log axes use powers of ten (or two) as ticks; every series gets a marker per point and an
 * entry in the legend.
 */

/** One line of a plot. */
export interface Series {
  /** Legend label. */
  name: string;
  /** [x, y] points, drawn in the given order. */
  points: [number, number][];
}

/** A line plot. */
export interface LinePlot {
  /** Title above the plot. */
  title: string;
  /** X axis label. */
  xLabel: string;
  /** Y axis label. */
  yLabel: string;
  /** The lines. */
  series: Series[];
  /** Logarithmic x axis. */
  xLog?: boolean;
  /** Logarithmic y axis. */
  yLog?: boolean;
  /** Pixel width (default 720). */
  width?: number;
  /** Pixel height (default 420). */
  height?: number;
}

// Colour-blind-safe palette (Okabe–Ito).
const COLORS = [
  "#0072B2",
  "#D55E00",
  "#009E73",
  "#CC79A7",
  "#E69F00",
  "#56B4E9",
  "#000000",
  "#F0E442",
];
const MARKERS = ["circle", "square", "diamond", "triangle"] as const;

/** Escape text for SVG/HTML. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(+v.toPrecision(12));
  }
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  const base = hi / lo > 1e3 ? 10 : 2;
  for (let e = Math.floor(Math.log(lo) / Math.log(base)); base ** e <= hi * 1.0001; e++) {
    if (base ** e >= lo * 0.9999) out.push(base ** e);
  }
  return out.length >= 2 ? out : niceTicks(lo, hi);
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a < 1e-3) return v.toExponential(0);
  return `${+v.toPrecision(3)}`;
}

function marker(kind: typeof MARKERS[number], x: number, y: number, color: string): string {
  const r = 3.5;
  switch (kind) {
    case "circle":
      return `<circle cx="${x}" cy="${y}" r="${r}" fill="${color}"/>`;
    case "square":
      return `<rect x="${x - r}" y="${y - r}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case "diamond":
      return `<path d="M${x} ${y - r - 1}L${x + r + 1} ${y}L${x} ${y + r + 1}L${
        x - r - 1
      } ${y}Z" fill="${color}"/>`;
    case "triangle":
      return `<path d="M${x} ${y - r - 1}L${x + r + 1} ${y + r}L${x - r - 1} ${
        y + r
      }Z" fill="${color}"/>`;
  }
}

/** Render a line plot as a standalone SVG document. */
export function renderLinePlot(plot: LinePlot): string {
  const width = plot.width ?? 780;
  const height = plot.height ?? 420;
  const m = { left: 70, right: 240, top: 40, bottom: 55 };
  const pts = plot.series.flatMap((s) => s.points).filter(([x, y]) =>
    Number.isFinite(x) && Number.isFinite(y) && (!plot.xLog || x > 0) && (!plot.yLog || y > 0)
  );
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
  if (x0 === x1) [x0, x1] = plot.xLog ? [x0 / 2, x1 * 2] : [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = plot.yLog ? [y0 / 2, y1 * 2] : [y0 - 1, y1 + 1];
  if (!plot.yLog) {
    const pad = 0.05 * (y1 - y0);
    [y0, y1] = [y0 - pad, y1 + pad];
  }
  const tx = (v: number) => plot.xLog ? Math.log(v) : v;
  const ty = (v: number) => plot.yLog ? Math.log(v) : v;
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const sx = (v: number) => +(m.left + ((tx(v) - tx(x0)) / (tx(x1) - tx(x0))) * pw).toFixed(1);
  const sy = (v: number) => +(m.top + ph - ((ty(v) - ty(y0)) / (ty(y1) - ty(y0))) * ph).toFixed(1);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12" role="img" aria-label="${
      escapeXml(plot.title)
    }">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${m.left + pw / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${
      escapeXml(plot.title)
    }</text>`,
  ];
  for (const v of plot.xLog ? logTicks(x0, x1) : niceTicks(x0, x1)) {
    const x = sx(v);
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x}" y="${m.top + ph + 16}" text-anchor="middle">${fmt(v)}</text>`);
  }
  for (const v of plot.yLog ? logTicks(y0, y1) : niceTicks(y0, y1)) {
    const y = sy(v);
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 6}" y="${y + 4}" text-anchor="end">${fmt(v)}</text>`);
  }
  out.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
  );
  out.push(
    `<text x="${m.left + pw / 2}" y="${height - 14}" text-anchor="middle">${
      escapeXml(plot.xLabel)
    }</text>`,
  );
  out.push(
    `<text x="16" y="${m.top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${
      m.top + ph / 2
    })">${escapeXml(plot.yLabel)}</text>`,
  );
  plot.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const kind = MARKERS[i % MARKERS.length];
    const valid = s.points.filter(([x, y]) =>
      Number.isFinite(x) && Number.isFinite(y) && (!plot.xLog || x > 0) && (!plot.yLog || y > 0)
    );
    if (valid.length > 1) {
      const d = valid.map(([x, y], j) => `${j ? "L" : "M"}${sx(x)} ${sy(y)}`).join("");
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`);
    }
    for (const [x, y] of valid.length <= 40 ? valid : []) {
      out.push(marker(kind, sx(x), sy(y), color));
    }
    const ly = m.top + 10 + i * 20;
    const lx = m.left + pw + 16;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
    );
    out.push(marker(kind, lx + 11, ly, color));
    out.push(`<text x="${lx + 28}" y="${ly + 4}" class="legend">${escapeXml(s.name)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n");
}
