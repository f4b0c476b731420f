import assert from "node:assert/strict";
import { randomF32 } from "../kernels/testing/mod.ts";
import { kronMaterializeCpu } from "../kernels/adapters/kron_cpu.ts";
import { kronRearrange, singularValues, truncationError } from "./svd.ts";

Deno.test("svd: singular values of a known matrix, rank and the Kronecker rearrangement", () => {
  // diag(3, 2) rotated: singular values 3, 2.
  const c = Math.cos(0.3);
  const s = Math.sin(0.3);
  const m = [3 * c, -2 * s, 3 * s, 2 * c, 0, 0]; // 3×2
  const sv = singularValues(m, 3, 2);
  assert.ok(Math.abs(sv[0] - 3) < 1e-12 && Math.abs(sv[1] - 2) < 1e-12);
  assert.ok(Math.abs(truncationError(sv, 1) - 2 / Math.sqrt(13)) < 1e-12);
  // Sum of two Kronecker products: R(T) has rank 2 exactly.
  const t = new Float64Array(6 * 8);
  kronMaterializeCpu(
    Float64Array.from(randomF32(6, 1)),
    Float64Array.from(randomF32(8, 2)),
    { ma: 3, na: 2, mb: 2, nb: 4 },
    1,
    t,
  );
  kronMaterializeCpu(
    Float64Array.from(randomF32(6, 3)),
    Float64Array.from(randomF32(8, 4)),
    { ma: 3, na: 2, mb: 2, nb: 4 },
    1,
    t,
  );
  const r = singularValues(kronRearrange(t, 3, 2, 2, 4), 6, 8);
  // Via the Gram matrix a zero singular value comes out as √(rounding) ≈ 1e-8.
  assert.ok(r[1] > 1e-3 && r[2] < 1e-6, `rank 2 expected: ${[...r]}`);
  assert.ok(truncationError(r, 2) < 1e-7);
});
