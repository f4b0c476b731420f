#!/usr/bin/env python3
"""The PyTorch peer of `deno task perf --peer torch`: the same workloads as bench/model_perf.ts,
written plainly in PyTorch on the CPU, so the performance document can state how far the WebGPU
path is from a mainstream framework on the same machine.

Workloads (per model): MoKA fine-tuning tokens/s (batch 1 x seq 256, MoKA on q, k, v, o, gate,
up, down with the same component shapes, AdamW on the adapters), greedy and 4-beam generation
tokens/s with a KV cache (32 new tokens from BOS, no EOS). The base is f32 here (moka's is NF4).
The llama2.c checkpoint is read in its own format; greedy ids from BOS are checked against the
checkpoint's reference so the two implementations compute the same model.

Usage: torch_peer.py --checkpoint stories260K.bin --reference reference.json --seconds S
Prints one JSON object. Thread settings are the caller's (OPENBLAS_NUM_THREADS=1 beside
torch.set_num_threads(2) on two cores: otherwise OpenMP and OpenBLAS threads fight).
"""
import argparse
import json
import math
import struct
import sys
import time

import torch
import torch.nn.functional as F


def load_llama2c(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    data = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    at = 0

    def take(*shape):
        nonlocal at
        n = math.prod(shape)
        t = data[at:at + n].view(*shape).clone()
        at += n
        return t

    hs = dim // heads
    kv = kv_heads * hs
    w = {"emb": take(vocab, dim), "rms_att": take(layers, dim), "wq": take(layers, dim, dim),
         "wk": take(layers, kv, dim), "wv": take(layers, kv, dim), "wo": take(layers, dim, dim),
         "rms_ffn": take(layers, dim), "w1": take(layers, hidden, dim),
         "w2": take(layers, dim, hidden), "w3": take(layers, hidden, dim), "rms_final": take(dim)}
    take(seq_len, hs // 2)
    take(seq_len, hs // 2)
    w["cls"] = w["emb"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab,
               seq_len=seq_len)
    return cfg, w


def random_model(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    d, h, L, kv = cfg["dim"], cfg["hidden"], cfg["layers"], cfg["kv_heads"] * cfg["dim"] // cfg["heads"]
    r = lambda *s: torch.randn(*s, generator=g) * 0.02
    w = {"emb": r(cfg["vocab"], d), "rms_att": torch.ones(L, d), "wq": r(L, d, d), "wk": r(L, kv, d),
         "wv": r(L, kv, d), "wo": r(L, d, d), "rms_ffn": torch.ones(L, d), "w1": r(L, h, d),
         "w2": r(L, d, h), "w3": r(L, h, d), "rms_final": torch.ones(d)}
    w["cls"] = w["emb"]
    return w


class Moka(torch.nn.Module):
    """y += s * sum_i softmax(g)_i * (A_i kron B_i) x, by the vec-trick (A X B^T per token)."""

    def __init__(self, d_in, d_out, components, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.shapes = [(ma, na, d_out // ma, d_in // na) for ma, na in components]
        self.A = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(ma, na)) for ma, na, _, _ in self.shapes])
        self.B = torch.nn.ParameterList(
            [torch.nn.Parameter((torch.rand(mb, nb, generator=g) * 2 - 1) / math.sqrt(nb))
             for _, _, mb, nb in self.shapes])
        self.gate = torch.nn.Parameter(torch.zeros(len(components)))

    def forward(self, x, y):
        alpha = torch.softmax(self.gate, 0)
        for i, (ma, na, mb, nb) in enumerate(self.shapes):
            xs = x.reshape(-1, na, nb)
            yi = torch.matmul(torch.matmul(self.A[i], xs), self.B[i].t())
            y = y + alpha[i] * yi.reshape(y.shape)
        return y


class Llama(torch.nn.Module):
    MODULES = ["q", "k", "v", "o", "gate", "up", "down"]

    def __init__(self, cfg, w, components, theta=10000.0):
        super().__init__()
        self.cfg, self.w = cfg, w
        d, hdim, heads = cfg["dim"], cfg["hidden"], cfg["heads"]
        self.hs = d // heads
        kv = cfg["kv_heads"] * self.hs
        dims = {"q": (d, d), "k": (d, kv), "v": (d, kv), "o": (d, d), "gate": (d, hdim),
                "up": (d, hdim), "down": (hdim, d)}
        self.adapters = torch.nn.ModuleDict({
            f"{l}_{m}": Moka(*dims[m], components, 7 * l + j)
            for l in range(cfg["layers"]) for j, m in enumerate(self.MODULES)})
        half = self.hs // 2
        freqs = 1.0 / theta ** (torch.arange(half, dtype=torch.float64) * 2 / self.hs)
        ang = torch.outer(torch.arange(cfg["seq_len"], dtype=torch.float64), freqs)
        self.cos, self.sin = ang.cos().float(), ang.sin().float()

    def linear(self, l, m, x, weight):
        return self.adapters[f"{l}_{m}"](x, x @ weight.t())

    def rope(self, x, pos):  # x [rows, T, heads, hs], interleaved pairs
        c, s = self.cos[pos][None, :, None, :], self.sin[pos][None, :, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2)

    @staticmethod
    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def forward(self, ids, pos, cache=None):
        """ids [rows, T] at positions pos (list); cache: per layer [k, v] of [rows, S, kvH, hs]."""
        cfg, w = self.cfg, self.w
        rows, T = ids.shape
        H, KV, hs = cfg["heads"], cfg["kv_heads"], self.hs
        h = w["emb"][ids].reshape(rows * T, -1)
        for l in range(cfg["layers"]):
            n = self.rms(h, w["rms_att"][l])
            q = self.linear(l, "q", n, w["wq"][l]).view(rows, T, H, hs)
            k = self.linear(l, "k", n, w["wk"][l]).view(rows, T, KV, hs)
            v = self.linear(l, "v", n, w["wv"][l]).view(rows, T, KV, hs)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if cache is not None:
                cache[l][0][:, pos] = k
                cache[l][1][:, pos] = v
                k, v = cache[l][0][:, :pos[-1] + 1], cache[l][1][:, :pos[-1] + 1]
            rep = H // KV
            kk = k.repeat_interleave(rep, 2).transpose(1, 2)
            vv = v.repeat_interleave(rep, 2).transpose(1, 2)
            att = q.transpose(1, 2) @ kk.transpose(-1, -2) / math.sqrt(hs)
            S = kk.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool).tril(S - T)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            o = (att @ vv).transpose(1, 2).reshape(rows * T, H * hs)
            h = h + self.linear(l, "o", o, w["wo"][l])
            n = self.rms(h, w["rms_ffn"][l])
            g = self.linear(l, "gate", n, w["w1"][l])
            u = self.linear(l, "up", n, w["w3"][l])
            h = h + self.linear(l, "down", F.silu(g) * u, w["w2"][l])
        return self.rms(h, w["rms_final"]) @ w["cls"].t()

    def new_cache(self, rows, S):
        kv = (rows, S, self.cfg["kv_heads"], self.hs)
        return [[torch.zeros(kv), torch.zeros(kv)] for _ in range(self.cfg["layers"])]


def train_tps(model, seq, seconds):
    opt = torch.optim.AdamW(model.adapters.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, model.cfg["vocab"], (1, seq + 1), generator=g)

    def step():
        logits = model(ids[:, :-1], list(range(seq)))
        loss = F.cross_entropy(logits, ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * seq / (time.perf_counter() - t0)


@torch.no_grad()
def generate(model, beams, new):
    """From BOS, `new` tokens, no EOS; 4 beams rank the top 2B of beams x vocab each step."""
    cache = model.new_cache(beams, new + 1)
    logits = model(torch.ones(1, 1, dtype=torch.long), [0], [[k[:1], v[:1]] for k, v in cache])
    for k, v in cache:
        k[:] = k[:1]
        v[:] = v[:1]
    scores = torch.zeros(1)
    out = []
    for i in range(new):
        lp = torch.log_softmax(logits.double(), -1) + scores[:, None]
        top = lp.flatten().topk(min(2 * beams, lp.numel()))
        parents = top.indices[:beams] // lp.shape[1]
        tokens = top.indices[:beams] % lp.shape[1]
        scores = top.values[:beams]
        if beams > 1:
            for k, v in cache:
                k[:len(parents)] = k[parents]
                v[:len(parents)] = v[parents]
        out.append(int(tokens[0]))
        if i + 1 < new:
            rows = len(tokens)
            step_cache = [[k[:rows], v[:rows]] for k, v in cache]
            logits = model(tokens.view(rows, 1), [i + 1], step_cache)
    return out


def gen_tps(model, beams, new, seconds):
    generate(model, beams, 4)
    n, t0 = 0, time.perf_counter()
    while n < 1 or time.perf_counter() - t0 < seconds:
        generate(model, beams, new)
        n += 1
    return n * new / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "base": "f32"}
    cfg, w = load_llama2c(a.checkpoint)
    ref = json.load(open(a.reference))
    random512 = dict(dim=512, hidden=1376, layers=8, heads=8, kv_heads=4, vocab=4096, seq_len=512)
    for name, c, weights, comps in [
        ("stories260k", cfg, w, [(4, 4), (2, 2)]),
        ("random_d512_l8", random512, None, [(8, 8), (4, 4)]),
    ]:
        model = Llama(c, weights if weights is not None else random_model(c, 1), comps)
        for p in model.adapters.parameters():
            p.requires_grad_(True)
        out[f"trainable_params_{name}"] = sum(p.numel() for p in model.adapters.parameters())
        if name == "stories260k":
            ids = generate(model, 1, 32)  # A = 0 at init: the adapters change nothing yet
            out["greedy_equals_reference"] = ids == ref["greedy_from_bos"]["ids"][:32]
        out[f"train_tokens_per_s_{name}"] = round(train_tps(model, 256, a.seconds), 1)
        out[f"generate_tokens_per_s_{name}"] = round(gen_tps(model, 1, 32, a.seconds), 1)
        out[f"generate_4beam_tokens_per_s_{name}"] = round(gen_tps(model, 4, 32, a.seconds), 1)
        print(f"[torch] {name} done", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
