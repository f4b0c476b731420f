/**
 * Reports: SVG plots, the static HTML pages of a grid and the Hono report server
 * ({@link createReportApp}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderLinePlot } from "./mod.ts";
 * const svg = renderLinePlot({
 *   title: "Training loss",
 *   xLabel: "step",
 *   yLabel: "loss",
 *   series: [
 *     { name: "moka", points: [[1, 2.5], [2, 2.1], [3, 1.8]] },
 *     { name: "lora", points: [[1, 2.6], [2, 2.3], [3, 2.0]] },
 *   ],
 * });
 * // A standalone SVG document (no script) with the title and a legend entry per series.
 * assert.ok(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"));
 * assert.ok(!svg.includes("<script"));
 * for (const text of ["Training loss", "moka", "lora"]) assert.ok(svg.includes(text));
 * ```
 *
 * @module
 */
export {
  DASHES,
  type DashStyle,
  DISTINCT_STYLES,
  downsample,
  type LinePlot,
  MARKERS,
  type MarkerShape,
  renderLinePlot,
  type Series,
  type SeriesStyle,
  seriesStyle,
} from "./svg.ts";
export { PUBLISHED, renderGridPage, renderRunPage, writeStaticPages } from "./html.ts";
export {
  createReportApp,
  type ReportApp,
  type ReportAppOptions,
  SECURITY_HEADERS,
} from "./server.ts";
export {
  publishAdapters,
  PublishConflictError,
  type PublishOptions,
  type PublishResult,
  publishRun,
} from "./publish.ts";
export {
  FolderStore,
  type FolderStoreOptions,
  type InvalidEntry,
  KvStore,
  type Listing,
  openFolderStore,
  openKvStore,
  type PutResult,
  type ReportStore,
  type RunSummary,
} from "./store/mod.ts";
// The report types the pages, stores and publisher take (defined with their schemas in grid/).
export type {
  ChoiceAccuracy,
  RunReport,
  SelfCheckReport,
  SelfCheckRow,
  TaskAccuracy,
} from "../grid/schema.ts";
export type { ChoiceScore } from "../evals/choice.ts";
