/**
 * The reproduction grid: configs (profiles, zod-validated), the run plan and shards, the
 * train → evaluate pipelines, the runner (resumable runs, one report per run), the run report
 * schema and the aggregation the pages show.
 *
 * @module
 */
export {
  type ChoiceAccuracy,
  type ExpressivenessReport,
  ExpressivenessReportSchema,
  type ExpressivenessRow,
  parseReportText,
  parseRunReport,
  parseSelfCheckReport,
  type ReportSchema,
  type RunReport,
  RunReportSchema,
  type SelfCheckReport,
  SelfCheckReportSchema,
  type SelfCheckRow,
  SelfCheckRowSchema,
  type TaskAccuracy,
} from "./schema.ts";
export {
  canonicalJson,
  FAMILIES,
  type Family,
  type GridConfig,
  GridConfigSchema,
  parseGridConfig,
  parseShard,
  planGrid,
  type PlannedRun,
  profile,
  type ProfileName,
  PROFILES,
  runConfig,
  sha256,
  shardRuns,
} from "./config.ts";
export {
  type ConfigRow,
  configRows,
  type MetricSpec,
  noiseVerdicts,
  type SeedStat,
} from "./aggregate.ts";
export { executeRun, finishedReport, type LoadedModel, loadGridModel } from "./runner.ts";
export {
  collectReports,
  type GridRow,
  gridRows,
  mergeShards,
  writeGridSummary,
} from "./summary.ts";
export {
  type CommonsenseRun,
  commonsenseTrainRecords,
  evaluateHeldOut,
  type InstructionRun,
  runCommonsense,
  runInstructionTuning,
  runMmlu,
  toExamples,
} from "./pipeline.ts";
