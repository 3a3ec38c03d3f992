#!/usr/bin/python3
"""PyTorch twin of bench_transformer (bench/bench_transformer.c): the same training steps
on the same shapes, weights, lengths and token ids, in tokens per second.

    /usr/bin/python3 bench/bench_transformer.py --init DIR --case block --batch 16 \\
        --intra 1 --omp 1 --blas 1

Cases (see bench_transformer.c for the full description):
  block     one pre-norm encoder block, width 512, 4 heads, FFN 1536 (ReLU), T 128, float
            inputs, MSE against a random target, every tensor trainable. Attention is
            torch's own nn.MultiheadAttention (packed in_proj q|k|v, as fedtune's qkv), or
            with --attention explicit the same maths written out (matmul, softmax, matmul).
  use-head  USE-lite (tests/data/use_lite_arch.json) + a 2-class head, softmax
            cross-entropy, only the head trainable;
  use-all   the same with every tensor trainable.
The USE-lite cases pad each batch to its longest sentence (as fedtune does) and mask the
padded keys (key_padding_mask) and the padded positions in the mean.

Weights: --init DIR holds block.safetensors and use.safetensors written by
`bench_transformer --save DIR`; every tensor is loaded by its fedtune name. One step is
zero_grad(set_to_none), forward, loss, backward, torch.optim.SGD(lr 0.01).step().

Threads: Debian's torch runs its own operators on an OpenMP pool (torch.set_num_threads,
OMP_NUM_THREADS) and its matrix products in OpenBLAS (pthreads build, its own pool sized
by OPENBLAS_NUM_THREADS, which set_num_threads does not govern). --intra, --omp and
--blas set the three separately; the environment is set before torch is imported.

Output: one JSON object per line, as bench_transformer --json.
"""

import argparse
import json
import math
import os
import statistics
import struct
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", required=True, metavar="DIR",
                   help="folder of bench_transformer --save")
    p.add_argument("--case", choices=["block", "use-head", "use-all"], default="block")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--intra", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--omp", type=int, default=1, help="OMP_NUM_THREADS")
    p.add_argument("--blas", type=int, default=1, help="OPENBLAS_NUM_THREADS")
    p.add_argument("--attention", choices=["mha", "explicit"], default="mha")
    p.add_argument("--lengths", metavar="FILE", help="sentence lengths, one a line")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    if a.batch < 1 or a.intra < 1 or a.omp < 1 or a.blas < 1 or a.repeats < 1:
        p.error("--batch, --intra, --omp, --blas, --repeats must be >= 1")
    if a.case != "block" and not a.lengths:
        p.error("--lengths FILE is required for the USE-lite cases (bench_transformer.sh "
                "passes both programs the same file)")
    return a


# The thread pools are sized from the environment when the libraries load, so the
# arguments are read before numpy and torch are imported.
ARGS = parse_args() if __name__ == "__main__" else None
if ARGS:
    os.environ["OMP_NUM_THREADS"] = str(ARGS.omp)
    os.environ["MKL_NUM_THREADS"] = str(ARGS.omp)
    os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261206
T_BLOCK, D_BLOCK, F_BLOCK, HEADS = 128, 512, 1536, 4
USE_T, USE_VOCAB, USE_CLASSES = 128, 8002, 2
SENTENCES = 512
LR = 0.01


def fail(msg):
    print("bench_transformer.py: " + msg, file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    """{name: float32 tensor} of an F32 safetensors file (fedtune writes F32)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail("%s: %s (run bench_transformer --save DIR first)" % (path, e.strerror))
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode())
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        if e["dtype"] != "F32":
            fail("%s: tensor %s is %s, not F32" % (path, name, e["dtype"]))
        b, end = e["data_offsets"]
        a = np.frombuffer(data, dtype="<f4", count=(end - b) // 4, offset=8 + n + b)
        out[name] = torch.from_numpy(a.astype(np.float32)).reshape(e["shape"])
    return out


def load(module, tensors, mapping, path):
    """Copies fedtune tensor `name` into the module parameter mapping[name], strictly."""
    params = dict(module.named_parameters())
    if sorted(mapping.values()) != sorted(params) or sorted(mapping) != sorted(tensors):
        fail("%s: tensors %s do not map onto the module's %s" %
             (path, sorted(tensors), sorted(params)))
    with torch.no_grad():
        for src, dst in mapping.items():
            if params[dst].shape != tensors[src].shape:
                fail("%s: %s has shape %s, the module wants %s" %
                     (path, src, list(tensors[src].shape), list(params[dst].shape)))
            params[dst].copy_(tensors[src])


# ---- the models ---------------------------------------------------------------------------


class ExplicitAttention(nn.Module):
    """Multi-head self-attention written out; parameters named as nn.MultiheadAttention's."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, key_padding_mask=None):
        N, T, D = x.shape
        hd = D // self.heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(D, dim=2)
        q, k, v = (t.reshape(N, T, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        s = q @ k.transpose(2, 3) * (1.0 / math.sqrt(hd))
        if key_padding_mask is not None:
            s = s.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        a = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(N, T, D)
        return self.out_proj(a)


def make_attention(d, heads, kind):
    if kind == "explicit":
        return ExplicitAttention(d, heads)
    return nn.MultiheadAttention(d, heads, batch_first=True)


def attend(mha, x, pad):
    if isinstance(mha, nn.MultiheadAttention):
        return mha(x, x, x, key_padding_mask=pad, need_weights=False)[0]
    return mha(x, key_padding_mask=pad)


def attention_names(fed, torch_name):
    return {fed + ".qkv.weight": torch_name + ".in_proj_weight",
            fed + ".qkv.bias": torch_name + ".in_proj_bias",
            fed + ".out.weight": torch_name + ".out_proj.weight",
            fed + ".out.bias": torch_name + ".out_proj.bias"}


class Block(nn.Module):
    """LN -> attention -> + x, LN -> FFN -> + x (pre-norm, as USE-lite's layers)."""

    def __init__(self, d, heads, ffn, attn, eps=1e-6, proj_to=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.mha = make_attention(d, heads, attn)
        out = proj_to or d
        self.proj = nn.Linear(d, out) if proj_to else None
        if proj_to:  # USE-lite layer 0: the attention maps 256 -> 512
            self.mha.out_proj = nn.Linear(d, out)
        self.norm2 = nn.LayerNorm(out, eps=eps)
        self.fc1 = nn.Linear(out, ffn)
        self.fc2 = nn.Linear(ffn, out)

    def forward(self, x, pad=None):
        a = attend(self.mha, self.norm1(x), pad)
        x = a + (self.proj(x) if self.proj is not None else x)
        return x + self.fc2(torch.relu(self.fc1(self.norm2(x))))

    @staticmethod
    def names(fed_attn, fed_ffn, proj=False):
        m = {fed_attn + ".norm.weight": "norm1.weight", fed_attn + ".norm.bias": "norm1.bias",
             fed_ffn + ".norm.weight": "norm2.weight", fed_ffn + ".norm.bias": "norm2.bias",
             fed_ffn + ".fc1.weight": "fc1.weight", fed_ffn + ".fc1.bias": "fc1.bias",
             fed_ffn + ".fc2.weight": "fc2.weight", fed_ffn + ".fc2.bias": "fc2.bias"}
        m.update(attention_names(fed_attn + ".mha", "mha"))
        if proj:
            m.update({fed_attn + ".proj.weight": "proj.weight",
                      fed_attn + ".proj.bias": "proj.bias"})
        return m


def timing_signal(T, D):
    """tensor2tensor's sinusoids, as fedtune's positions layer."""
    pos = torch.arange(T, dtype=torch.float32)
    half = D // 2
    inv = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(1.0e4) / (half - 1)))
    t = pos[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class UseLite(nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.embed = nn.Embedding(USE_VOCAB, 256)
        self.register_buffer("signal", timing_signal(USE_T, 256))
        self.l0 = Block(256, HEADS, F_BLOCK, attn, proj_to=512)
        self.l1 = Block(512, HEADS, F_BLOCK, attn)
        self.dense = nn.Linear(512, 512)
        self.head = nn.Linear(512, USE_CLASSES)

    def forward(self, ids):
        valid = ids >= 0
        pad = ~valid
        Tb = ids.shape[1]
        x = self.embed(ids.clamp(min=0)) * valid[..., None] + self.signal[:Tb]
        x = self.l1(self.l0(x, pad), pad)
        m = valid[..., None].to(x.dtype)
        x = torch.tanh(self.dense((x * m).sum(1) / m.sum(1)))
        x = x / torch.sqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-12))
        return self.head(x)

    @staticmethod
    def names():
        m = {"embed.weight": "embed.weight", "pool.dense.weight": "dense.weight",
             "pool.dense.bias": "dense.bias", "head.weight": "head.weight",
             "head.bias": "head.bias"}
        for k, v in Block.names("l0.attn", "l0.ffn", proj=True).items():
            m[k] = "l0." + v
        for k, v in Block.names("l1.attn", "l1.ffn").items():
            m[k] = "l1." + v
        return m


# ---- inputs and timing ------------------------------------------------------------------


def read_lengths(path):
    try:
        with open(path) as f:
            lengths = [int(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        fail("%s: %s" % (path, e))
    if not lengths or min(lengths) < 1 or max(lengths) > USE_T:
        fail("%s: want lengths in [1, %d]" % (path, USE_T))
    return lengths[:SENTENCES]


def use_batches(lengths, batch):
    """The batches of bench_transformer.c: sentence n has length lengths[n % len] and ids
    (n * 131 + t * 31 + 7) mod 8002; each batch cut to its longest sentence."""
    nb = max(8, (len(lengths) + batch - 1) // batch)
    out, tokens = [], 0
    for j in range(nb):
        rows = []
        for i in range(batch):
            n = j * batch + i
            L = lengths[n % len(lengths)]
            rows.append([(n * 131 + t * 31 + 7) % USE_VOCAB if t < L else -1
                         for t in range(USE_T)])
            tokens += L
        ids = torch.tensor(rows, dtype=torch.int64)
        Tb = int((ids >= 0).sum(1).max())
        labels = torch.tensor([(j * batch + i) % USE_CLASSES for i in range(batch)])
        out.append((ids[:, :Tb].contiguous(), labels))
    return out, tokens


def block_batches(batch):
    g = torch.Generator().manual_seed(SEED + batch)
    out = []
    for _ in range(4):
        x = 2 * torch.rand(batch, T_BLOCK, D_BLOCK, generator=g) - 1
        y = 2 * torch.rand(batch, T_BLOCK, D_BLOCK, generator=g) - 1
        out.append((x, y))
    return out, 4 * batch * T_BLOCK


def run(a):
    if a.case == "block":
        model = Block(D_BLOCK, HEADS, F_BLOCK, a.attention)
        path = os.path.join(a.init, "block.safetensors")
        load(model, read_safetensors(path), Block.names("attn", "ffn"), path)
        batches, tokens = block_batches(a.batch)
        loss_fn = F.mse_loss
    else:
        model = UseLite(a.attention)
        path = os.path.join(a.init, "use.safetensors")
        load(model, read_safetensors(path), UseLite.names(), path)
        if a.case == "use-head":
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("head."))
        batches, tokens = use_batches(read_lengths(a.lengths), a.batch)
        loss_fn = F.cross_entropy
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    per_step = tokens / len(batches)
    k = 0
    last = float("nan")

    def step():
        nonlocal k, last
        x, y = batches[k % len(batches)]
        k += 1
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        last = loss.item()

    rnd = 1 if a.case == "block" else len(batches)
    t0 = time.perf_counter()
    while k < 3 or k % rnd or time.perf_counter() - t0 < 0.5 * a.seconds:
        step()
    rates = []
    for _ in range(a.repeats):
        k0, start = k, time.perf_counter()
        while True:
            step()
            el = time.perf_counter() - start
            if el >= a.seconds and k % rnd == 0:
                break
        rates.append(per_step * (k - k0) / el)
    med = statistics.median(rates)
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "case": a.case,
        "batch": a.batch, "intra": a.intra, "omp": a.omp, "blas": a.blas,
        "attention": a.attention, "tokens_per_s": round(med, 1),
        "ms_per_step": round(1e3 * per_step / med, 3),
        "spread_pct": round(100 * (max(rates) - min(rates)) / med, 1),
        "mean_len": round(tokens / (len(batches) * a.batch), 2), "loss": last}))


def main():
    torch.set_num_threads(ARGS.intra)
    torch.manual_seed(SEED)
    run(ARGS)


if __name__ == "__main__":
    main()
