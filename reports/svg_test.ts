// The SVG is checked as text: regexes pull out the attributes the renderer promises (data-series,
// data-style, data-reference, tick and legend positions), and small checkers compare them.
import assert from "node:assert/strict";
import {
  DISTINCT_STYLES,
  downsample,
  escapeXml,
  renderLinePlot,
  type Series,
  seriesStyle,
} from "./svg.ts";

/** Estimated pixel width of a character at font-size 12 (as the renderer assumes). */
const CHAR_WIDTH = 7;

const num = (s: string) => Number(s);
/** A number in an attribute, captured. */
const N = "(-?[\\d.]+)";
/** A regex from parts written as strings, to keep long patterns within the line width. */
const pattern = (parts: string[], flags = "") => new RegExp(parts.join(""), flags);

function svgSize(svg: string): { width: number; height: number } {
  const m = svg.match(/^<svg [^>]*width="([\d.]+)" height="([\d.]+)"/);
  assert.ok(m, "svg root with width and height");
  return { width: num(m[1]), height: num(m[2]) };
}

/** The framed plot area (the rect with the dark stroke). */
function plotArea(svg: string): { left: number; top: number; right: number; bottom: number } {
  const m = svg.match(
    pattern([`<rect x="${N}" y="${N}" width="${N}" height="${N}" fill="none" stroke="#333"/>`]),
  );
  assert.ok(m, "plot frame");
  const [left, top, w, h] = m.slice(1).map(num);
  return { left, top, right: left + w, bottom: top + h };
}

/** Each series group's index and style, in document order. */
function seriesGroups(svg: string): { index: number; style: string; body: string }[] {
  return [
    ...svg.matchAll(/<g class="series" data-series="(\d+)" data-style="([^"]*)">([^]*?)<\/g>/g),
  ]
    .map((m) => ({ index: num(m[1]), style: m[2], body: m[3] }));
}

/** Styles used by more than one series: empty when every series looks different. */
function duplicateStyles(svg: string): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const { style } of seriesGroups(svg)) (seen.has(style) ? dup : seen).add(style);
  return [...dup];
}

/** Vertices of a path's `d` (one per M or L command). */
function vertices(d: string): [number, number][] {
  return [...d.matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)].map((m) => [num(m[1]), num(m[2])]);
}

/** The line path of a series group (not the error bars). */
function linePath(body: string): string | undefined {
  return body.match(/<path d="([^"]*)" fill="none" stroke="[^"]*" stroke-width="2"/)?.[1];
}

interface Box {
  label: string;
  x0: number;
  x1: number;
  y0: number;
  y1: number;
}

/** Bounding boxes of legend entries (sample line, marker and estimated text width). */
function legendBoxes(svg: string): Box[] {
  return [
    ...svg.matchAll(
      pattern([
        `<g class="legend-entry"[^>]*>(?:<title>[^<]*</title>)?<line x1="${N}" y1="${N}"[^]*?`,
        `<text x="${N}" y="${N}" class="legend">([^<]*)</text></g>`,
      ], "g"),
    ),
  ].map((m) => {
    const label = m[5].replace(/&#\d+;/g, "x");
    const [lineX, lineY, textX] = [m[1], m[2], m[3]].map(num);
    return {
      label,
      x0: lineX,
      x1: textX + Array.from(label).length * CHAR_WIDTH,
      y0: lineY - 7,
      y1: lineY + 7,
    };
  });
}

/** Pairs of boxes that overlap, as "a / b". */
function overlaps(boxes: Box[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, b] = [boxes[i], boxes[j]];
      if (a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1) {
        out.push(`${a.label} / ${b.label}`);
      }
    }
  }
  return out;
}

/** X tick labels as boxes centred on their x (text-anchor middle). */
function xTickBoxes(svg: string): Box[] {
  return [...svg.matchAll(/<text class="x-tick" x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]*)<\/text>/g)]
    .map((m) => {
      const [x, y] = [num(m[1]), num(m[2])];
      const half = (m[3].length * CHAR_WIDTH) / 2;
      return { label: m[3], x0: x - half, x1: x + half, y0: y - 12, y1: y };
    });
}

function assertNoNaN(svg: string) {
  assert.doesNotMatch(svg, /NaN|Infinity|undefined/);
}

const line = (n: number, f: (i: number) => number): [number, number][] =>
  Array.from({ length: n }, (_, i) => [i, f(i)]);

Deno.test("seriesStyle: 96 distinct styles, neighbours differ in colour and marker", () => {
  const keys = new Set<string>();
  for (let i = 0; i < DISTINCT_STYLES; i++) {
    const s = seriesStyle(i);
    keys.add(`${s.color}|${s.marker}|${s.dash}`);
    const next = seriesStyle(i + 1);
    assert.notEqual(s.color, next.color, `colour of ${i} and ${i + 1}`);
    assert.notEqual(s.marker, next.marker, `marker of ${i} and ${i + 1}`);
  }
  assert.equal(keys.size, DISTINCT_STYLES);
  assert.deepEqual(seriesStyle(DISTINCT_STYLES), seriesStyle(0));
  assert.deepEqual(seriesStyle(0), { color: "#0072B2", marker: "circle", dash: "solid" });
  assert.deepEqual(seriesStyle(-1), seriesStyle(DISTINCT_STYLES - 1));
  assert.deepEqual(seriesStyle(NaN), seriesStyle(0));
});

Deno.test("16 series get 16 distinct styles; legend and line match", () => {
  const series: Series[] = Array.from({ length: 16 }, (_, i) => ({
    name: `adapter ${i}`,
    points: line(5, (x) => x + i),
  }));
  const svg = renderLinePlot({ title: "t", xLabel: "x", yLabel: "y", series });
  assertNoNaN(svg);
  const groups = seriesGroups(svg);
  assert.equal(groups.length, 16);
  assert.deepEqual(groups.map((g) => g.index), [...Array(16).keys()]);
  assert.equal(new Set(groups.map((g) => g.style)).size, 16);
  assert.deepEqual(duplicateStyles(svg), []);
  for (let i = 1; i < 16; i++) {
    const [c0, m0] = groups[i - 1].style.split("|");
    const [c1, m1] = groups[i].style.split("|");
    assert.notEqual(c0, c1, `series ${i - 1} and ${i} share a colour`);
    assert.notEqual(m0, m1, `series ${i - 1} and ${i} share a marker`);
  }
  const legends = [
    ...svg.matchAll(
      /<g class="legend-entry" data-series="(\d+)" data-style="([^"]*)">([^]*?)<\/g>/g,
    ),
  ];
  assert.equal(legends.length, 16);
  const shapeTag = {
    circle: "<circle",
    square: "<rect",
    diamond: "<path",
    triangle: "<path",
    "triangle-down": "<path",
    cross: "<path",
  };
  for (const [, index, style, body] of legends) {
    const group = groups[num(index)];
    assert.equal(style, group.style, `legend ${index} has the line's style`);
    const [color, marker, dash] = style.split("|");
    const dashAttr = dash === "solid" ? null : body.match(/stroke-dasharray="([^"]+)"/)?.[1];
    // The sample line in the legend and the plotted line carry the same colour and dash.
    assert.match(body, new RegExp(`<line [^>]*stroke="${color}"`));
    assert.match(group.body, new RegExp(`<path d="[^"]*" fill="none" stroke="${color}"`));
    if (dash === "solid") assert.doesNotMatch(group.body + body, /stroke-dasharray/);
    else {
      assert.ok(dashAttr, `legend ${index} is dashed`);
      assert.ok(group.body.includes(`stroke-dasharray="${dashAttr}"`), `line ${index} is dashed`);
    }
    assert.ok(
      body.includes(`${shapeTag[marker as keyof typeof shapeTag]} `),
      `legend ${index}: ${marker}`,
    );
    // Markers are drawn at each of the 5 points, in the series' colour.
    assert.ok(group.body.split(`"${color}"`).length - 1 >= 6, `markers of series ${index}`);
  }
});

Deno.test("negative control: the style checker reports two series with the same style", () => {
  const handMade = [
    `<svg width="10" height="10">`,
    `<g class="series" data-series="0" data-style="#0072B2|circle|solid"><path d="M0 0L1 1"/></g>`,
    `<g class="series" data-series="1" data-style="#D55E00|square|solid"><path d="M0 0L1 1"/></g>`,
    `<g class="series" data-series="2" data-style="#0072B2|circle|solid"><path d="M0 0L1 1"/></g>`,
    `</svg>`,
  ].join("\n");
  assert.deepEqual(duplicateStyles(handMade), ["#0072B2|circle|solid"]);
  const pinnedTwice = renderLinePlot({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [
      { name: "a", points: line(3, (i) => i), style: 4 },
      { name: "b", points: line(3, (i) => 2 * i), style: 4 },
    ],
  });
  assert.equal(duplicateStyles(pinnedTwice).length, 1);
});

Deno.test("a pinned style is honoured; others keep their position's style", () => {
  const svg = renderLinePlot({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [
      { name: "moka", points: line(4, (i) => i), style: 13 },
      { name: "lora", points: line(4, (i) => 2 * i) },
    ],
  });
  const key = (i: number) => Object.values(seriesStyle(i)).join("|");
  assert.deepEqual(seriesGroups(svg).map((g) => g.style), [key(13), key(1)]);
  assert.match(svg, new RegExp(`class="legend-entry" data-series="0" data-style="${key(13)}"`));
});

Deno.test("a reference line spans the plot inside the y range, with its label", () => {
  const svg = renderLinePlot({
    title: "t",
    xLabel: "params",
    yLabel: "accuracy (%)",
    xLog: true,
    series: [{ name: "moka", points: [[1e5, 70], [1e6, 80]] }],
    // Below every point: the y range must stretch to include it.
    references: [{ label: "base <model>", y: 40 }, { label: "chance", y: 25, dash: "2 2" }],
  });
  assertNoNaN(svg);
  const area = plotArea(svg);
  for (const [label, dash] of [["base &#60;model&#62;", "6 3"], ["chance", "2 2"]]) {
    const m = svg.match(
      pattern([
        `<g class="reference" data-reference="${label}">`,
        `<line x1="${N}" y1="${N}" x2="${N}" y2="${N}" stroke="#888"`,
        `[^>]*stroke-dasharray="${dash}"/>`,
        `<text x="${N}" y="${N}"[^>]*>${label}</text></g>`,
      ]),
    );
    assert.ok(m, `reference ${label}`);
    const [x1, y1, x2, y2, tx, ty] = m.slice(1).map(num);
    assert.equal(y1, y2);
    assert.ok(y1 > area.top && y1 < area.bottom, `reference y ${y1} inside the plot`);
    assert.deepEqual([x1, x2], [area.left, area.right]);
    assert.ok(tx <= area.right && ty > area.top && ty < area.bottom, "label inside the plot");
  }
});

Deno.test("error bars are drawn at each point and fit in the y range", () => {
  const svg = renderLinePlot({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "mean ± sd", points: [[1, 10], [2, 12], [3, 11]], yErr: [5, NaN, 1] }],
  });
  assertNoNaN(svg);
  const d = svg.match(/<path class="error-bars" d="([^"]*)"/)?.[1];
  assert.ok(d, "error bars");
  // One bar (a vertical stroke and two caps) per point with a finite positive half-width.
  const bars = [...d.matchAll(/M(-?[\d.]+) (-?[\d.]+)L(-?[\d.]+) (-?[\d.]+)/g)];
  assert.equal(bars.length, 2);
  const area = plotArea(svg);
  for (const [, xa, ya, xb, yb] of bars) {
    assert.equal(xa, xb);
    for (const y of [num(ya), num(yb)]) assert.ok(y >= area.top && y <= area.bottom);
  }
  // The ±5 bar is five times as long as the ±1 bar.
  const lengths = bars.map((b) => num(b[4]) - num(b[2]));
  assert.ok(Math.abs(lengths[0] / lengths[1] - 5) < 0.05, `bar lengths ${lengths}`);
});

Deno.test("downsample keeps the ends and each bucket's extremes, in order", () => {
  const points = line(10_000, (i) => Math.sin(i / 50) + (i === 4321 ? 9 : 0) - (i === 777 ? 9 : 0));
  const kept = downsample(points, 200);
  assert.ok(kept.length <= 200);
  assert.equal(kept[0], 0);
  assert.equal(kept.at(-1), 9_999);
  assert.ok(kept.every((k, i) => i === 0 || k > kept[i - 1]), "increasing indices");
  assert.ok(kept.includes(4321) && kept.includes(777), "spike and dip survive");
  assert.deepEqual(downsample(line(5, (i) => i), 200), [0, 1, 2, 3, 4]);
});

Deno.test("a 31,900-step loss curve renders fast, ≤ 2×maxPoints vertices, spike kept", () => {
  const spikeAt = 12_345;
  const points = line(31_900, (i) => 3 * Math.exp(-i / 4000) + 0.3 + 0.05 * Math.sin(i * 1.7));
  points[spikeAt][1] = 50;
  for (const maxPoints of [undefined, 300]) {
    const start = performance.now();
    const svg = renderLinePlot({
      title: "Training loss",
      xLabel: "step",
      yLabel: "loss",
      series: [{ name: "loss", points }],
      maxPoints,
    });
    const ms = performance.now() - start;
    assert.ok(ms < 1000, `rendered in ${ms.toFixed(0)} ms`);
    assertNoNaN(svg);
    const d = linePath(seriesGroups(svg)[0].body);
    assert.ok(d);
    const vs = vertices(d);
    assert.ok(vs.length <= 2 * (maxPoints ?? 1000), `${vs.length} vertices`);
    assert.ok(vs.length >= (maxPoints ?? 1000) / 2, `${vs.length} vertices still trace the curve`);
    const area = plotArea(svg);
    assert.equal(vs[0][0], area.left);
    assert.equal(vs.at(-1)![0], area.right);
    assert.ok(vs.every((v, i) => i === 0 || v[0] >= vs[i - 1][0]), "vertices in x order");
    // The spike is the top of the data: 5% padding above it, so it sits at top + height/22.
    const top = vs.reduce((a, b) => (b[1] < a[1] ? b : a));
    const height = area.bottom - area.top;
    assert.ok(Math.abs(top[1] - (area.top + height / 22)) < 0.2, `spike at y ${top[1]}`);
    const spikeX = area.left + ((area.right - area.left) * spikeAt) / 31_899;
    assert.ok(Math.abs(top[0] - spikeX) < 0.2, `spike at x ${top[0]} (expected ${spikeX})`);
    assert.doesNotMatch(seriesGroups(svg)[0].body, /<circle/, "no markers on a long series");
  }
});

Deno.test("a 300,000-point series does not overflow the stack", () => {
  const points = line(300_000, (i) => 1 + (i % 1000) / 1000);
  for (const xLog of [false, true]) {
    const svg = renderLinePlot({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      xLog,
      series: [{ name: "big", points }, {
        name: "big too",
        points: points.map(([x, y]) => [x, -y]),
      }],
    });
    assertNoNaN(svg);
    assert.equal(seriesGroups(svg).length, 2);
  }
});

Deno.test("log x axis over 1e5..4e6 has 1-2-5 ticks whose labels do not overlap", () => {
  // Plot widths 470, 210 and 140 px (the legend takes 310 px).
  for (const width of [780, 520, 450]) {
    const svg = renderLinePlot({
      title: "Accuracy vs trainable parameters",
      xLabel: "trainable parameters",
      yLabel: "accuracy (%)",
      xLog: true,
      width,
      series: [{ name: "moka", points: [[1e5, 60], [4e6, 80]] }],
    });
    assertNoNaN(svg);
    const labels = xTickBoxes(svg);
    const gridlines =
      svg.match(/<line x1="([\d.]+)" y1="[\d.]+" x2="\1" y2="[\d.]+" stroke="#e5e5e5"\/>/g) ?? [];
    assert.ok(gridlines.length >= 5, `${gridlines.length} gridlines at width ${width}`);
    assert.ok(labels.length >= 3, `${labels.length} labels at width ${width}`);
    assert.deepEqual(overlaps(labels), [], `labels at width ${width}`);
    if (width === 780) {
      assert.deepEqual(labels.map((l) => l.label), ["100k", "200k", "500k", "1M", "2M"]);
    }
    // At 140 px every other label goes (the gridlines stay).
    if (width === 450) assert.deepEqual(labels.map((l) => l.label), ["100k", "500k", "2M"]);
  }
});

Deno.test("log axes: narrow ranges still get 3 ticks, wide ranges use powers of ten", () => {
  const ticks = (lo: number, hi: number) =>
    xTickBoxes(renderLinePlot({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      xLog: true,
      width: 1400,
      series: [{ name: "s", points: [[lo, 1], [hi, 2]] }],
    })).map((b) => b.label);
  assert.ok(ticks(1.1e5, 1.9e5).length >= 3, `${ticks(1.1e5, 1.9e5)}`);
  assert.ok(ticks(3e5, 4e5).length >= 3, `${ticks(3e5, 4e5)}`);
  assert.deepEqual(ticks(1, 1e6), ["1", "10", "100", "1k", "10k", "100k", "1M"]);
  assert.deepEqual(ticks(2e9, 3e11), ["2B", "5B", "10B", "20B", "50B", "100B", "200B"]);
  // A log y axis from 1e-4 to 10 keeps its labels a line apart.
  const svg = renderLinePlot({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    yLog: true,
    height: 200,
    series: [{ name: "s", points: [[0, 1e-4], [1, 10], [2, -1], [3, 0]] }],
  });
  assertNoNaN(svg);
  const ys = [...svg.matchAll(/<text class="y-tick" x="[\d.]+" y="([\d.]+)"/g)].map((m) =>
    num(m[1])
  );
  assert.ok(ys.length >= 3);
  assert.ok(ys.every((y, i) => i === 0 || Math.abs(y - ys[i - 1]) >= 14), `y labels at ${ys}`);
});

Deno.test("negative control: the overlap checker catches colliding labels and legends", () => {
  const handMade = `<text class="x-tick" x="100" y="380" text-anchor="middle">1.5M</text>
<text class="x-tick" x="120" y="380" text-anchor="middle">2M</text>`;
  assert.equal(overlaps(xTickBoxes(handMade)).length, 1);
  const legend = `<g class="legend-entry" data-series="0" data-style="a"><line x1="560" y1="50"/>` +
    `<text x="590" y="54" class="legend">one</text></g>\n` +
    `<g class="legend-entry" data-series="1" data-style="b"><line x1="560" y1="60"/>` +
    `<text x="590" y="64" class="legend">two</text></g>`;
  assert.deepEqual(overlaps(legendBoxes(legend)), ["one / two"]);
});

Deno.test("legend entries of 20 and 60 series neither overlap nor leave the SVG", () => {
  for (const count of [20, 60]) {
    const series: Series[] = Array.from({ length: count }, (_, i) => ({
      name: i === 3 ? "a very long adapter name that cannot possibly fit (llama-3-8b)" : `run ${i}`,
      points: line(3, (x) => x * i),
    }));
    const svg = renderLinePlot({ title: "t", xLabel: "x", yLabel: "y", series });
    assertNoNaN(svg);
    const { width, height } = svgSize(svg);
    const boxes = legendBoxes(svg);
    assert.equal(boxes.length, count);
    assert.deepEqual(overlaps(boxes), [], `${count} legend entries overlap`);
    for (const b of boxes) {
      assert.ok(b.x0 >= 0 && b.x1 <= width, `${b.label} inside: ${b.x1} ≤ ${width}`);
      assert.ok(b.y0 >= 0 && b.y1 <= height, `${b.label} inside: ${b.y1} ≤ ${height}`);
    }
    assert.ok(boxes[3].label.endsWith("…"), `truncated: ${boxes[3].label}`);
    assert.match(
      svg,
      /<title>a very long adapter name that cannot possibly fit \(llama-3-8b\)<\/title>/,
    );
  }
});

Deno.test("XML special characters in the title, labels and names are escaped", () => {
  const nasty = `<script>"x" & 'y'</script>`;
  const svg = renderLinePlot({
    title: nasty,
    xLabel: nasty,
    yLabel: nasty,
    series: [{ name: nasty, points: [[0, 1], [1, 2]] }],
    references: [{ label: nasty, y: 1.5 }],
  });
  assert.ok(!svg.includes("<script"), "no raw tag");
  assert.ok(!svg.includes(`"x"`) && !svg.includes("'y'"), "no raw quotes");
  const escaped = escapeXml(nasty);
  assert.equal(escaped, "&#60;script&#62;&#34;x&#34; &#38; &#39;y&#39;&#60;/script&#62;");
  // Title text, aria-label, x label, y label, legend, reference attribute and reference label.
  assert.equal(svg.split(escaped).length - 1, 7);
  // Every "&" starts an entity.
  assert.doesNotMatch(svg, /&(?!#\d+;)/);
});

Deno.test("empty and degenerate plots render axes and title without throwing", () => {
  for (const [xLog, yLog] of [[false, false], [true, true]]) {
    for (
      const series of [
        [],
        [{ name: "nothing", points: [] }],
        [{ name: "unplottable", points: [[NaN, 1], [0, -1], [Infinity, 2]] as [number, number][] }],
        [{ name: "one point", points: [[5, 5]] as [number, number][] }],
      ]
    ) {
      const svg = renderLinePlot({ title: "Empty", xLabel: "x", yLabel: "y", xLog, yLog, series });
      assertNoNaN(svg);
      assert.match(svg, /font-weight="bold">Empty<\/text>/);
      plotArea(svg);
      assert.ok(xTickBoxes(svg).length >= 2, `x ticks for ${series.length} series`);
      assert.ok(svg.endsWith("</svg>"));
    }
  }
});

Deno.test("markers only on series of ≤ 40 points; the existing call shape still works", () => {
  const svg = renderLinePlot({
    title: "Accuracy vs trainable parameters",
    xLabel: "trainable parameters",
    yLabel: "accuracy (%)",
    xLog: true,
    series: [
      { name: "moka (llama)", points: [[9e5, 70], [3.7e6, 75]] },
      { name: "dense", points: line(41, (i) => i).map(([x, y]) => [x + 1, y]) },
    ],
  });
  assertNoNaN(svg);
  const [sparse, dense] = seriesGroups(svg);
  assert.equal((sparse.body.match(/<circle/g) ?? []).length, 2);
  assert.equal(dense.body.match(/<rect|<circle|Z"/g), null);
});

Deno.test("renderLinePlot: 14 series of 31,900 points render without a stack overflow", () => {
  const series = Array.from({ length: 14 }, (_, s) => ({
    name: `run ${s}`,
    points: Array.from(
      { length: 31_900 },
      (_, i) => [i + 1, 3 * Math.exp(-i / 5000) + s / 10] as [number, number],
    ),
  }));
  const svg = renderLinePlot({ title: "loss", xLabel: "step", yLabel: "loss", series });
  const paths = [...svg.matchAll(/<path d="(M[^"]*)" fill="none"/g)];
  assert.equal(paths.length, 14);
  for (const p of paths) assert.ok(p[1].split("L").length <= 1000);
  // The x axis spans the whole curve: its last tick is near 31,900 (not a fallback range).
  assert.match(svg, />30k</);
});
