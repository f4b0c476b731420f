/**
 * Static SVG line plots for reports: no JavaScript, readable in any browser or markdown viewer.
 * Each series gets its own combination of colour, marker and dash (see {@link seriesStyle}) and
 * an entry in the legend; long series are downsampled for display, keeping their spikes.
 */

/** One line of a plot. */
export interface Series {
  /** Legend label. */
  name: string;
  /** [x, y] points, drawn in the given order. */
  points: [number, number][];
  /** Half-widths of vertical error bars, one per point (non-finite or ≤ 0: no bar). */
  yErr?: number[];
  /**
   * Style index for {@link seriesStyle} (default: the series' position), so that a series (an
   * adapter, say) keeps its look across plots.
   */
  style?: number;
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
  /** Pixel width (default 780). */
  width?: number;
  /**
   * Padding of the x range on each side, as a fraction of it (of its logarithm on a log axis):
   * scatter-like plots keep their outermost points off the frame. Default 0.
   */
  padX?: number;
  /** Pixel height (default 420; grows when the legend needs more room). */
  height?: number;
  /**
   * Horizontal grey lines across the plot (e.g. "base model", "chance"), labelled at their right
   * end and included in the y range; `dash` is an SVG dash array (default "6 3").
   */
  references?: { label: string; y: number; dash?: string }[];
  /** Most points drawn per series (default 1000); longer series are downsampled for display. */
  maxPoints?: number;
}

/** Marker shapes, in the order {@link seriesStyle} cycles through them. */
export const MARKERS = [
  "circle",
  "square",
  "diamond",
  "triangle",
  "triangle-down",
  "cross",
] as const;

/** A marker shape. */
export type MarkerShape = typeof MARKERS[number];

/** Line dash patterns, in the order {@link seriesStyle} cycles through them. */
export const DASHES = ["solid", "dashed", "dotted", "dash-dot"] as const;

/** A line dash pattern. */
export type DashStyle = typeof DASHES[number];

/** How one series looks: line and marker colour, marker shape and line dash. */
export interface SeriesStyle {
  /** Hex colour of the line and markers. */
  color: string;
  /** Marker shape at each point and in the legend. */
  marker: MarkerShape;
  /** Line dash pattern. */
  dash: DashStyle;
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
const DASH_ARRAYS: Record<DashStyle, string> = {
  "solid": "",
  "dashed": "7 4",
  "dotted": "2 3",
  "dash-dot": "8 3 2 3",
};

/**
 * Number of distinct styles {@link seriesStyle} produces before repeating: colour and dash together
 * repeat every 32 indices and markers every 6, so triples repeat every lcm(32, 6) = 96.
 */
export const DISTINCT_STYLES = 96;

/**
 * The style of the series at `index`: colour cycles every index, marker every index (with a
 * different period), dash every 8 indices. Neighbouring indices therefore differ in colour and
 * marker, the first 8 series are solid, and indices 0..95 are pairwise distinct triples.
 */
export function seriesStyle(index: number): SeriesStyle {
  const i = ((Math.floor(index) % DISTINCT_STYLES) + DISTINCT_STYLES) % DISTINCT_STYLES || 0;
  return {
    color: COLORS[i % COLORS.length],
    marker: MARKERS[i % MARKERS.length],
    dash: DASHES[Math.floor(i / COLORS.length) % DASHES.length],
  };
}

/** Escape text for SVG/HTML. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * Indices of the points to draw when a series has more than `maxPoints`: the first and last
 * points and, per bucket of consecutive points, the ones with the least and greatest y (so spikes
 * survive), in their original order. Returns at most `maxPoints` (at least 4) indices.
 */
export function downsample(points: [number, number][], maxPoints: number): number[] {
  const n = points.length;
  const limit = Math.max(4, Math.floor(maxPoints));
  if (n <= limit) return Array.from({ length: n }, (_, i) => i);
  const buckets = Math.floor((limit - 2) / 2);
  const inner = n - 2;
  const kept = [0];
  for (let b = 0; b < buckets; b++) {
    const start = 1 + Math.floor((b * inner) / buckets);
    const end = 1 + Math.floor(((b + 1) * inner) / buckets);
    let lo = start;
    let hi = start;
    for (let j = start + 1; j < end; j++) {
      if (points[j][1] < points[lo][1]) lo = j;
      if (points[j][1] > points[hi][1]) hi = j;
    }
    if (lo === hi) kept.push(lo);
    else kept.push(Math.min(lo, hi), Math.max(lo, hi));
  }
  kept.push(n - 1);
  return kept;
}

// Linear ticks at 1-2-5 steps, about `count` of them.
function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  // Multiples of an integer counter: `v += step` can stall when step is tiny next to v.
  for (let k = Math.ceil(lo / step); k * step <= hi + step * 1e-9 && out.length < 100; k++) {
    out.push(+(k * step).toPrecision(12));
  }
  return out;
}

// Ticks at `multipliers` × 10^e that lie inside [lo, hi].
function decadeTicks(lo: number, hi: number, multipliers: number[]): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of multipliers) {
      const v = +(m * 10 ** e).toPrecision(12);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
    }
  }
  return out;
}

// Log-axis ticks: 1-2-5 per decade over fewer than 4 decades, powers of ten beyond; at least 3.
function logTicks(lo: number, hi: number): number[] {
  if (!(lo > 0) || !Number.isFinite(hi) || hi <= lo) return niceTicks(lo, hi);
  const decades = Math.log10(hi / lo);
  if (decades >= 4) {
    const powers = decadeTicks(lo, hi, [1]);
    // Past a dozen decades every k-th power keeps the grid readable.
    const k = Math.ceil(powers.length / 12);
    return powers.filter((v) => Math.round(Math.log10(v)) % k === 0);
  }
  for (const multipliers of [[1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
    const ticks = decadeTicks(lo, hi, multipliers);
    if (ticks.length >= 3) return ticks;
  }
  return niceTicks(lo, hi).filter((v) => v > 0);
}

// Compact labels (200k, 1.5M, 3B) with just enough digits to tell the ticks apart.
function tickLabels(values: number[]): string[] {
  const format = (v: number, digits: number): string => {
    if (v === 0) return "0";
    const a = Math.abs(v);
    for (const [scale, suffix] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]] as const) {
      if (a >= scale) return `${+(v / scale).toPrecision(digits)}${suffix}`;
    }
    if (a < 1e-3) return (+v.toExponential(digits - 1)).toExponential();
    return `${+v.toPrecision(digits)}`;
  };
  for (let digits = 3; digits < 8; digits++) {
    const labels = values.map((v) => format(v, digits));
    if (new Set(labels).size === labels.length) return labels;
  }
  return values.map((v) => format(v, 8));
}

/** Estimated pixel width of text at font-size 12. */
const CHAR_WIDTH = 7;
/** Vertical room one line of font-size 12 text needs. */
const LINE_HEIGHT = 14;

/**
 * Which tick labels to show so that none collide: all if they fit, else every 2nd, 4th, … (the
 * offset keeping the most labels, then the most powers of ten). `extent[i]` is label i's size
 * along the axis; gridlines are drawn for every tick regardless.
 */
function visibleLabels(positions: number[], extent: number[], values: number[]): boolean[] {
  const n = positions.length;
  const fits = (kept: number[]) =>
    kept.every((k, j) =>
      j === 0 ||
      Math.abs(positions[k] - positions[kept[j - 1]]) >= (extent[k] + extent[kept[j - 1]]) / 2 + 4
    );
  const isPower = (v: number) =>
    v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
  for (let stride = 1; stride < 2 * n; stride *= 2) {
    let best: number[] | undefined;
    let bestScore = -1;
    for (let offset = 0; offset < stride; offset++) {
      const kept = positions.map((_, i) => i).filter((i) => i % stride === offset);
      const score = kept.length * 1000 + kept.filter((i) => isPower(values[i])).length;
      if (kept.length && score > bestScore && fits(kept)) [best, bestScore] = [kept, score];
    }
    if (best) return positions.map((_, i) => best.includes(i));
  }
  return positions.map((_, i) => i === 0);
}

function marker(kind: MarkerShape, x: number, y: number, color: string): string {
  const r = 3.5;
  const p = (px: number, py: number) => `${+px.toFixed(1)} ${+py.toFixed(1)}`;
  switch (kind) {
    case "circle":
      return `<circle cx="${x}" cy="${y}" r="${r}" fill="${color}"/>`;
    case "square":
      return `<rect x="${+(x - r).toFixed(1)}" y="${+(y - r).toFixed(1)}" width="${
        2 * r
      }" height="${2 * r}" fill="${color}"/>`;
    case "diamond":
      return `<path d="M${p(x, y - r - 1)}L${p(x + r + 1, y)}L${p(x, y + r + 1)}L${
        p(x - r - 1, y)
      }Z" fill="${color}"/>`;
    case "triangle":
      return `<path d="M${p(x, y - r - 1)}L${p(x + r + 1, y + r)}L${
        p(x - r - 1, y + r)
      }Z" fill="${color}"/>`;
    case "triangle-down":
      return `<path d="M${p(x, y + r + 1)}L${p(x + r + 1, y - r)}L${
        p(x - r - 1, y - r)
      }Z" fill="${color}"/>`;
    case "cross":
      return `<path d="M${p(x - r, y - r)}L${p(x + r, y + r)}M${p(x - r, y + r)}L${
        p(x + r, y - r)
      }" stroke="${color}" stroke-width="2" fill="none"/>`;
  }
}

function strokeDash(dash: DashStyle): string {
  return DASH_ARRAYS[dash] ? ` stroke-dasharray="${DASH_ARRAYS[dash]}"` : "";
}

/** Truncate to at most `max` characters, ending in an ellipsis when cut. */
function truncate(s: string, max: number): string {
  const chars = Array.from(s);
  return chars.length <= max ? s : chars.slice(0, Math.max(1, max - 1)).join("") + "…";
}

/** Render a line plot as a standalone SVG document. */
export function renderLinePlot(plot: LinePlot): string {
  const width = plot.width ?? 780;
  const baseHeight = plot.height ?? 420;
  const m = { left: 70, right: 240, top: 40, bottom: 55 };
  const maxPoints = plot.maxPoints ?? 1000;
  const usable = (x: number, y: number) =>
    Number.isFinite(x) && Number.isFinite(y) && (!plot.xLog || x > 0) && (!plot.yLog || y > 0);

  // Data ranges by loops: spreading hundreds of thousands of values into Math.min overflows.
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  const includeY = (y: number) => {
    if (!Number.isFinite(y) || (plot.yLog && y <= 0)) return;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  };
  const drawable = plot.series.map((s) => {
    const kept: number[] = [];
    s.points.forEach(([x, y], j) => {
      if (!usable(x, y)) return;
      kept.push(j);
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      includeY(y);
      const e = s.yErr?.[j];
      if (e !== undefined && Number.isFinite(e) && e > 0) {
        includeY(y - e);
        includeY(y + e);
      }
    });
    return kept;
  });
  for (const r of plot.references ?? []) includeY(r.y);
  if (x0 > x1) [x0, x1] = plot.xLog ? [1, 10] : [0, 1];
  if (y0 > y1) [y0, y1] = plot.yLog ? [1, 10] : [0, 1];
  if (x0 === x1) [x0, x1] = plot.xLog ? [x0 / 2, x1 * 2] : [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = plot.yLog ? [y0 / 2, y1 * 2] : [y0 - 1, y1 + 1];
  if (!plot.yLog) {
    const pad = 0.05 * (y1 - y0);
    [y0, y1] = [y0 - pad, y1 + pad];
  }
  if (plot.padX) {
    // Room around the outermost points (their markers and error bars), in the axis' own scale.
    if (plot.xLog) {
      const f = (x1 / x0) ** plot.padX;
      [x0, x1] = [x0 / f, x1 * f];
    } else {
      const pad = plot.padX * (x1 - x0);
      [x0, x1] = [x0 - pad, x1 + pad];
    }
  }
  const tx = (v: number) => plot.xLog ? Math.log(v) : v;
  const ty = (v: number) => plot.yLog ? Math.log(v) : v;
  const pw = width - m.left - m.right;
  const ph = baseHeight - m.top - m.bottom;
  const sx = (v: number) => +(m.left + ((tx(v) - tx(x0)) / (tx(x1) - tx(x0))) * pw).toFixed(1);
  const sy = (v: number) => +(m.top + ph - ((ty(v) - ty(y0)) / (ty(y1) - ty(y0))) * ph).toFixed(1);
  const clampY = (py: number) => Math.min(m.top + ph, Math.max(m.top, py));

  const legend = legendLayout(plot.series.length, {
    x: m.left + pw + 16,
    top: m.top + 10,
    width: m.right - 16,
    height: ph - 10,
  });
  const height = Math.max(baseHeight, Math.ceil(legend.bottom + 8));

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12" role="img" ` +
    `aria-label="${escapeXml(plot.title)}">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${m.left + pw / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${
      escapeXml(plot.title)
    }</text>`,
  ];
  const xTicks = plot.xLog ? logTicks(x0, x1) : niceTicks(x0, x1);
  const xLabels = tickLabels(xTicks);
  const xShown = visibleLabels(
    xTicks.map(sx),
    xLabels.map((l) => l.length * CHAR_WIDTH),
    xTicks,
  );
  xTicks.forEach((v, i) => {
    const x = sx(v);
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#e5e5e5"/>`);
    if (xShown[i]) {
      out.push(
        `<text class="x-tick" x="${x}" y="${m.top + ph + 16}" text-anchor="middle">${
          xLabels[i]
        }</text>`,
      );
    }
  });
  const yTicks = plot.yLog ? logTicks(y0, y1) : niceTicks(y0, y1);
  const yLabels = tickLabels(yTicks);
  const yShown = visibleLabels(yTicks.map(sy), yTicks.map(() => LINE_HEIGHT - 4), yTicks);
  yTicks.forEach((v, i) => {
    const y = sy(v);
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e5e5e5"/>`);
    if (yShown[i]) {
      out.push(
        `<text class="y-tick" x="${m.left - 6}" y="${y + 4}" text-anchor="end">${
          yLabels[i]
        }</text>`,
      );
    }
  });
  out.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
  );
  out.push(
    `<text x="${m.left + pw / 2}" y="${baseHeight - 14}" text-anchor="middle">${
      escapeXml(plot.xLabel)
    }</text>`,
  );
  out.push(
    `<text x="16" y="${m.top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${
      m.top + ph / 2
    })">${escapeXml(plot.yLabel)}</text>`,
  );
  for (const r of plot.references ?? []) {
    if (!Number.isFinite(r.y) || (plot.yLog && r.y <= 0)) continue;
    const y = sy(r.y);
    // Label above the line, or below it when the line hugs the top of the plot.
    const labelY = y - m.top < LINE_HEIGHT + 2 ? y + LINE_HEIGHT - 1 : y - 4;
    out.push(
      `<g class="reference" data-reference="${
        escapeXml(r.label)
      }"><line x1="${m.left}" y1="${y}" x2="${
        m.left + pw
      }" y2="${y}" stroke="#888" stroke-width="1.5" stroke-dasharray="${
        escapeXml(r.dash ?? "6 3")
      }"/><text x="${m.left + pw - 4}" y="${labelY}" text-anchor="end" fill="#555">${
        escapeXml(r.label)
      }</text></g>`,
    );
  }
  plot.series.forEach((s, i) => {
    const style = seriesStyle(s.style ?? i);
    const { color } = style;
    const attrs = `data-series="${i}" data-style="${color}|${style.marker}|${style.dash}"`;
    const valid = drawable[i];
    const shown = downsample(valid.map((j) => s.points[j]), maxPoints).map((k) => valid[k]);
    out.push(`<g class="series" ${attrs}>`);
    if (shown.length > 1) {
      const d = shown.map((j, k) => `${k ? "L" : "M"}${sx(s.points[j][0])} ${sy(s.points[j][1])}`)
        .join("");
      out.push(
        `<path d="${d}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round"${
          strokeDash(style.dash)
        }/>`,
      );
    }
    const bars = shown.flatMap((j) => {
      const e = s.yErr?.[j];
      if (e === undefined || !Number.isFinite(e) || e <= 0) return [];
      const [x, y] = s.points[j];
      const px = sx(x);
      const top = clampY(sy(y + e));
      // On a log axis y - e may be ≤ 0: the bar then runs to the bottom of the plot.
      const bottom = plot.yLog && y - e <= 0 ? m.top + ph : clampY(sy(y - e));
      return [`M${px} ${top}L${px} ${bottom}M${px - 3} ${top}h6M${px - 3} ${bottom}h6`];
    });
    if (bars.length) {
      out.push(
        `<path class="error-bars" d="${
          bars.join("")
        }" fill="none" stroke="${color}" stroke-width="1.2"/>`,
      );
    }
    for (const j of valid.length <= 40 ? valid : []) {
      out.push(marker(style.marker, sx(s.points[j][0]), sy(s.points[j][1]), color));
    }
    out.push("</g>");
    const { x: lx, y: ly } = legend.entries[i];
    const label = truncate(s.name, legend.maxChars);
    out.push(
      `<g class="legend-entry" ${attrs}>${
        label === s.name ? "" : `<title>${escapeXml(s.name)}</title>`
      }<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${color}" stroke-width="2"${
        strokeDash(style.dash)
      }/>${marker(style.marker, lx + 12, ly, color)}<text x="${lx + 30}" y="${
        ly + 4
      }" class="legend">${escapeXml(label)}</text></g>`,
    );
  });
  out.push("</svg>");
  return out.join("\n");
}

/**
 * Where legend entries go: one column at 20 px spacing, shrinking to one text line when they would
 * not fit in the box, then two columns; past that the SVG grows downward. `maxChars` is the longest
 * name that fits its column (at ~7 px per character).
 */
function legendLayout(
  count: number,
  box: { x: number; top: number; width: number; height: number },
): { entries: { x: number; y: number }[]; maxChars: number; bottom: number } {
  const columns = (count - 1) * LINE_HEIGHT <= box.height ? 1 : 2;
  const rows = Math.ceil(count / columns);
  const spacing = rows <= 1 ? 20 : Math.max(LINE_HEIGHT, Math.min(20, box.height / (rows - 1)));
  const columnWidth = box.width / columns;
  const entries = Array.from({ length: count }, (_, i) => ({
    x: +(box.x + Math.floor(i / rows) * columnWidth).toFixed(1),
    y: +(box.top + (i % rows) * spacing).toFixed(1),
  }));
  const maxChars = Math.max(2, Math.floor((columnWidth - 30 - 6) / CHAR_WIDTH));
  return { entries, maxChars, bottom: box.top + Math.max(0, rows - 1) * spacing + LINE_HEIGHT };
}
