/**
 * Reports: SVG plots, the static HTML pages of a grid and the Hono report server
 * ({@link createReportApp}).
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
export { createReportApp, type ReportApp, type ReportAppOptions } from "./server.ts";
