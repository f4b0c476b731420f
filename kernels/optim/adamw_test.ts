import assert from "node:assert/strict";
import { randomF32, relativeError, testRuntime, TOLERANCE } from "../testing/mod.ts";
import { adamwStep, adamwStepCpu } from "./adamw.ts";

Deno.test("adamw: GPU steps equal the float64 reference; a hand-computed first step", async () => {
  const rt = await testRuntime();
  const n = 3001;
  const p0 = randomF32(n, 1);
  const ref = { param: Float64Array.from(p0), m: new Float64Array(n), v: new Float64Array(n) };
  const gpu = {
    param: rt.upload(p0, [n]),
    grad: rt.empty([n]),
    m: rt.upload(new Float32Array(n), [n]),
    v: rt.upload(new Float32Array(n), [n]),
  };
  for (let step = 1; step <= 5; step++) {
    const g = randomF32(n, 10 + step);
    rt.write(gpu.grad, g);
    const hp = { lr: 1e-2, weightDecay: 0.1, step };
    const b = rt.batch();
    await adamwStep(rt, b, gpu, hp);
    await b.submit();
    adamwStepCpu({ ...ref, grad: g }, hp);
  }
  assert.ok(relativeError(await rt.read(gpu.param), ref.param) < TOLERANCE.f32);
  assert.ok(relativeError(await rt.read(gpu.v), ref.v) < TOLERANCE.f32);
  // Step 1 without decay moves every weight by lr·sign(g) (up to ε): m̂ = g, √v̂ = |g|.
  const one = { param: new Float64Array([1, 1]), m: new Float64Array(2), v: new Float64Array(2) };
  adamwStepCpu({ ...one, grad: [0.5, -2] }, { lr: 0.1, step: 1, eps: 0 });
  assert.deepEqual([...one.param].map((x) => +x.toFixed(12)), [0.9, 1.1]);
  assert.throws(() => adamwStepCpu({ ...one, grad: [0, 0] }, { lr: 0.1, step: 0 }), /step=0/);
});
