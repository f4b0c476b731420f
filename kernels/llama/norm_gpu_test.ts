/**
 * The GPU RMSNorm (a workgroup per row) against its float64 twin: widths below, at and far above
 * the workgroup (vec4 and scalar rows), accumulate or overwrite a NaN-poisoned dx, and a mutated
 * reduction that must fail the same comparison.
 */
import assert from "node:assert/strict";
import { rmsnormBackward as rmsBwdCpu, rmsnormForward as rmsFwdCpu } from "./cpu/rmsnorm.ts";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import {
  rmsnormBackwardGpu,
  rmsnormBackwardGpuWgsl,
  rmsnormForwardGpu,
  rmsnormForwardGpuWgsl,
} from "./norm_gpu.ts";

const f64 = (a: Float32Array) => Float64Array.from(a);

Deno.test("rmsnorm (gpu kernels): forward, 1/rms and backward equal float64 (widths 5 to 4100)", async () => {
  const rt = await testRuntime({ target: "gpu" });
  let seed = 10;
  for (const [rows, dim] of [[1, 24], [7, 77], [3, 4100], [37, 256], [2, 5]]) {
    const x = randomF32(rows * dim, seed++);
    const w = randomF32(dim, seed++).map((v) => 1 + v / 2);
    const dy = randomF32(rows * dim, seed++);
    const prev = randomF32(rows * dim, seed++);
    const gx = rt.upload(x, [rows, dim]);
    const gw = rt.upload(w, [dim]);
    const gdy = rt.upload(dy, [rows, dim]);
    const y = rt.empty([rows, dim]);
    const inv = rt.empty([rows]);
    const dx = rt.empty([rows, dim]);
    const dxAcc = rt.upload(prev, [rows, dim]);
    for (const t of [y, inv, dx]) rt.fill(t, NaN);
    const b = rt.batch();
    await rmsnormForwardGpu(rt, b, { y, inv, x: gx, w: gw, eps: 1e-5 });
    await rmsnormBackwardGpu(rt, b, { dx, x: gx, w: gw, inv, dy: gdy, accumulate: false });
    await rmsnormBackwardGpu(rt, b, { dx: dxAcc, x: gx, w: gw, inv, dy: gdy, accumulate: true });
    await b.submit();
    const what = `${rows}×${dim}`;
    const fwd = rmsFwdCpu(f64(x), w, rows, dim, 1e-5);
    const bwd = rmsBwdCpu(f64(x), w, fwd.inv, f64(dy), rows, dim).dx;
    assert.ok(relativeError(await rt.read(y), fwd.y) < TOLERANCE.f32, `${what} y`);
    assert.ok(relativeError(await rt.read(inv), fwd.inv) < TOLERANCE.f32, `${what} 1/rms`);
    assert.ok(relativeError(await rt.read(dx), bwd) < TOLERANCE.f32, `${what} dx`);
    const acc = bwd.map((v, i) => v + prev[i]);
    assert.ok(relativeError(await rt.read(dxAcc), acc) < TOLERANCE.f32, `${what} dx accumulated`);
  }
});

Deno.test("rmsnorm (gpu kernels): a tree step that drops its partner fails (negative control)", async () => {
  const rt = await testRuntime({ target: "gpu" });
  const [rows, dim] = [5, 600];
  const x = randomF32(rows * dim, 1);
  const w = randomF32(dim, 2).map((v) => 1 + v / 2);
  const ref = rmsFwdCpu(f64(x), w, rows, dim, 1e-5);
  const code = rmsnormForwardGpuWgsl(true);
  const mutated = code.replace("red[li] += red[li + stride];", "");
  assert.notEqual(mutated, code, "the mutation must apply");
  assert.ok(rmsnormBackwardGpuWgsl(true).includes("red[li] += red[li + stride];"));
  for (const [wgsl, intact] of [[code, true], [mutated, false]] as const) {
    const y = rt.empty([rows, dim]);
    const inv = rt.empty([rows]);
    const b = rt.batch();
    const pipeline = await rt.pipelines.get(wgsl, "rmsnorm/negative-control");
    const params = new ArrayBuffer(16);
    new Uint32Array(params).set([rows, dim]);
    new Float32Array(params)[2] = 1e-5;
    b.dispatch(
      pipeline,
      [
        b.uniform(params),
        rt.upload(x, [rows, dim]).binding,
        rt.upload(w, [dim]).binding,
        y.binding,
        inv.binding,
      ],
      [rows, 1],
      "rmsnorm/negative-control",
    );
    await b.submit();
    const err = relativeError(await rt.read(y), ref.y);
    assert.equal(err < TOLERANCE.f32, intact, `${intact ? "intact" : "mutated"}: ${err}`);
  }
});
