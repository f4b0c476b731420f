/**
 * The reproduction grid: configs (profiles, zod-validated), the run plan and shards, the
 * train → evaluate pipelines, the runner (resumable runs, one report per run, claimed so that
 * processes can share an output folder), the run report schema and the aggregation the pages show.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseGridConfig, planGrid } from "./mod.ts";
 * const config = {
 *   profile: "demo",
 *   adapters: { base: null, lora: { kind: "lora", r: 4, alpha: 8 } },
 *   targets: ["q_proj", "v"],
 *   seeds: [1, 2],
 *   commonsense: { tasks: ["boolq"], maxLen: 256, beams: 1, maxNew: 8 },
 *   train: { steps: 10, lr: 1e-3, batchSize: 2 },
 * };
 * const grid = parseGridConfig(config);
 * assert.deepEqual(grid.targets, ["q", "v"]); // module aliases resolved
 * assert.equal(grid.base, "nf4"); // defaults filled in
 * // The base model runs once per family; each adapter once per seed.
 * assert.deepEqual(
 *   planGrid(grid).map((run) => run.id),
 *   ["base-commonsense-s1", "lora-commonsense-s1", "lora-commonsense-s2"],
 * );
 * // A typo is refused with its full path and the closest field name.
 * assert.throws(
 *   () => parseGridConfig({ ...config, train: { ...config.train, stpes: 10 } }),
 *   /field train\.stpes: unrecognized key \(did you mean steps\?\)/,
 * );
 * ```
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
  checkContext,
  FAMILIES,
  type Family,
  type GridConfig,
  GridConfigSchema,
  type GridTrainOptions,
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
export {
  executeRun,
  finishedReport,
  type LoadedModel,
  loadGridModel,
  type RunOptions,
  type RunOutcome,
} from "./runner.ts";
export {
  CLAIM_FILE,
  type ClaimResult,
  claimRun,
  type RunClaim,
  tempPath,
  writeFileAtomic,
} from "./claim.ts";
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
