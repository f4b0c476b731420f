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
export {
  createReportApp,
  type ReportApp,
  type ReportAppOptions,
  SECURITY_HEADERS,
} from "./server.ts";
export {
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
