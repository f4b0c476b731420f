import assert from "node:assert/strict";
import { encodeSafetensors } from "../safetensors.ts";
import { CHECKPOINT_FORMAT, readCheckpoint } from "./train.ts";

// A checkpoint as Trainer.save writes one: param/adam_m/adam_v per adapter tensor, state as JSON.
const TENSORS = [
  { name: "param.0.q.A", shape: [2, 4] },
  { name: "adam_m.0.q.A", shape: [2, 4] },
  { name: "adam_v.0.q.A", shape: [2, 4] },
];
const EXPECT = { fingerprint: "run-1", steps: 10, tensors: TENSORS };

function checkpoint(
  options: { poison?: number; state?: Record<string, unknown>; shape?: number[] } = {},
): Uint8Array {
  const state = {
    step: 3,
    position: { epoch: 0, index: 6 },
    history: [1, 2, 3].map((step) => ({
      step,
      loss: 2 / step,
      gradNorm: 1,
      lr: 1e-3,
      tokens: 64,
      seconds: 0.1,
    })),
    fingerprint: "run-1",
    ...options.state,
  };
  return encodeSafetensors(
    TENSORS.map((t, i) => {
      const shape = i === 0 && options.shape ? options.shape : t.shape;
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5);
      if (i === 0 && options.poison !== undefined) data[5] = options.poison;
      return { name: t.name, shape, data };
    }),
    { format: CHECKPOINT_FORMAT, version: "1", state: JSON.stringify(state) },
  );
}

Deno.test("checkpoint: a clean checkpoint reads back its state and tensors", () => {
  const { state, values } = readCheckpoint(checkpoint(), "ckpt.safetensors", EXPECT);
  assert.equal(state.step, 3);
  assert.deepEqual(state.position, { epoch: 0, index: 6 });
  assert.equal(values.length, 3);
  assert.equal(values[0][5], 0.5);
});

Deno.test("checkpoint: NaN or Inf in a parameter or optimizer tensor is refused, naming the file and tensor", async () => {
  for (const bad of [NaN, Infinity, -Infinity]) {
    assert.throws(
      () => readCheckpoint(checkpoint({ poison: bad }), "run/ckpt.safetensors", EXPECT),
      new RegExp(
        `run/ckpt\\.safetensors: tensor "param\\.0\\.q\\.A" holds 1 non-finite value of 8 ` +
          `\\(first: ${bad} at index 5\\)`,
      ),
    );
  }
  // From disk, as Trainer.resume reads it.
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/ckpt.safetensors`, checkpoint({ poison: NaN }));
  const path = `${dir}/ckpt.safetensors`;
  assert.throws(
    () => readCheckpoint(Deno.readFileSync(path), path, EXPECT),
    /ckpt\.safetensors: tensor "param\.0\.q\.A" holds 1 non-finite/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("checkpoint: bad state, shapes or a step past the run are refused by field", () => {
  assert.throws(
    () => readCheckpoint(checkpoint({ state: { step: -1 } }), "c.st", EXPECT),
    /c\.st: training state field step: /,
  );
  assert.throws(
    () => readCheckpoint(checkpoint({ state: { position: { epoch: 0 } } }), "c.st", EXPECT),
    /c\.st: training state field position\.index: /,
  );
  // A diverged run's NaN loss was saved as null.
  assert.throws(
    () =>
      readCheckpoint(
        checkpoint({
          state: { history: [{ step: 1, loss: null, gradNorm: 1, lr: 1, tokens: 1, seconds: 1 }] },
        }),
        "c.st",
        EXPECT,
      ),
    /c\.st: training state field history\.0\.loss: /,
  );
  assert.throws(
    () => readCheckpoint(checkpoint({ state: { step: 11 } }), "c.st", EXPECT),
    /c\.st: training state field step: 11 > 10 steps/,
  );
  assert.throws(
    () => readCheckpoint(checkpoint({ shape: [4, 2] }), "c.st", EXPECT),
    /c\.st: tensor "param\.0\.q\.A" has shape \[4,2\], expected \[2,4\]/,
  );
  assert.throws(
    () => readCheckpoint(checkpoint(), "c.st", { ...EXPECT, fingerprint: "other" }),
    /c\.st: checkpoint of a different run/,
  );
});
