"""fedtune's transformer layers against PyTorch autograd, on the same weights and inputs.

For each model below, Python draws the weights (fixed seeds), writes them as safetensors
with the fedtune architecture in __metadata__["fedtune.arch"] (safetensors_io.py), and
writes a batch of padded token sequences (ids as floats, -1 up to T) with labels.
tests/tools/st_grad runs fedtune's forward in train mode, the mean softmax cross-entropy
and the backward pass, and writes the output, the loss and every gradient. The same
numbers come from a plain PyTorch implementation of each layer kind (below: F.linear,
F.layer_norm, attention written out with a boolean mask, tensor2tensor's sinusoids,
masked mean, x / sqrt(max(sum x^2, eps))) run by autograd in float64 on the float32
weights, at the full length T with padding masks, whereas fedtune packs the sentences of a
batch back to back (core/model_seq.c). Checked:

  - outputs and loss: max abs diff <= 1e-5 relative to max(1, largest |output|);
  - every gradient tensor: max abs diff <= 1e-5 relative to the largest gradient of the
    model (the worst of each tensor is printed, with torch's own float32 error beside
    it for scale), and st_grad writes exactly the trainable tensors;
  - models: "encoder" (sinusoidal positions, a pre-norm attention block with a projected
    skip, an FFN block, a causal attention block, meanpool, linear, tanh, l2norm, head),
    "learned" (learned positions, nested residual blocks, bias-free causal attention, a
    GELU FFN, a top-level layer norm, meanpool, head), each on a batch of lengths 1..T
    (one of length 1, one of T) and on a batch shorter than T whose tokens do not fill
    whole rows per example once fedtune packs them; and USE-lite
    (tests/data/use_lite_arch.json plus a head, T = 128, batch 4) with every tensor
    trainable and with only the head trainable (--freeze); and "gpt", a tiny GPT (learned
    positions, 2 pre-norm blocks of causal attention and a GELU MLP, a final layer norm,
    the lmhead tied to the embedding) under the next-token loss
    F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), ignore_index=-1)
    on padded batches, every tensor trainable, then only the blocks' MLPs (the tied table
    frozen), outputs compared at the real tokens (padded positions carry no loss);
  - st_grad refuses malformed batches with one clear line (exit 1).

Usage: interop_torch_transformer.py PATH/TO/st_grad
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

from safetensors_io import read_safetensors, write_safetensors

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

ST_GRAD = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print("ok   " + what)
    else:
        failed += 1
        print("FAIL " + what)


# ---- the reference: each layer kind in plain torch --------------------------------------


def timing_signal(T, D):
    """tensor2tensor's get_timing_signal_1d (min timescale 1, max 1e4), in float32 as TF
    computes it: sin of the scaled times in the first D/2 channels, cos in the rest."""
    position = torch.arange(T, dtype=torch.float32)
    num_timescales = D // 2
    log_timescale_increment = math.log(1.0e4 / 1.0) / max(num_timescales - 1, 1)
    inv_timescales = 1.0 * torch.exp(
        torch.arange(num_timescales, dtype=torch.float32) * -log_timescale_increment)
    scaled_time = position[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def attention(x, valid, P, name, heads, causal, bias):
    """Multi-head self-attention on packed q|k|v projections; key j is visible to query i
    when j is a real token (and j <= i when causal)."""
    N, T, D = x.shape
    hd = D // heads
    qkv = F.linear(x, P[name + ".qkv.weight"], P[name + ".qkv.bias"] if bias else None)
    q, k, v = qkv.split(D, dim=2)
    q, k, v = (t.reshape(N, T, heads, hd).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(2, 3) / math.sqrt(hd)  # (N, H, T, T)
    mask = valid[:, None, None, :].expand(N, heads, T, T)
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    att = torch.softmax(scores, dim=-1) @ v  # (N, H, T, hd)
    att = att.transpose(1, 2).reshape(N, T, D)
    return F.linear(att, P[name + ".out.weight"], P[name + ".out.bias"] if bias else None)


class Params:
    """The model's tensors by fedtune name. In create mode each first use draws a value
    (shape from the layer, distribution from its kind); otherwise it hands out the stored
    tensor, as float64 leaves with gradients when asked."""

    def __init__(self, gen=None):
        self.gen, self.t = gen, {}

    def need(self, name, shape, kind):
        if name not in self.t:
            assert self.gen is not None, "no tensor " + name
            self.t[name] = draw(self.gen, shape, kind)
        assert list(self.t[name].shape) == list(shape), name
        return self.t[name]

    def leaves(self, dtype):
        out = Params()
        out.t = {k: v.to(dtype).clone().requires_grad_(True) for k, v in self.t.items()}
        return out


def draw(gen, shape, kind):
    if kind == "embedding":
        return torch.randn(shape, generator=gen)
    if kind == "positions":
        return 0.5 * torch.randn(shape, generator=gen)
    if kind == "norm.weight":
        return 0.5 + torch.rand(shape, generator=gen)
    if kind in ("bias", "norm.bias"):
        return 0.4 * torch.rand(shape, generator=gen) - 0.2
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))  # xavier uniform
    return bound * (2.0 * torch.rand(shape, generator=gen) - 1.0)


def run_layers(layers, x, valid, P, prefix):
    """The layers of a spec list (prefix: the enclosing block's name, None at the top)
    applied to x: (N, T, D) while a sequence, (N, D) after meanpool."""
    for j, ls in enumerate(layers):
        kind = ls["type"]
        name = ls.get("name", str(j) if prefix is None else "%s.%d" % (prefix, j))
        D = x.shape[-1]
        if kind == "embedding":
            assert ls.get("pad", False), "the comparison feeds padded sequences"
            ids = x.long()
            valid = ids >= 0
            W = P.need(name + ".weight", [ls["vocab"], ls["dim"]], "embedding")
            x = F.embedding(ids.clamp(min=0), W) * valid[..., None].to(W.dtype)
        elif kind == "positions":
            T = x.shape[1]
            if ls.get("kind", "sinusoidal") == "learned":
                x = x + P.need(name + ".weight", [T, D], "positions")
            else:
                x = x + timing_signal(T, D).to(x.dtype)
        elif kind == "layernorm":
            w = P.need(name + ".weight", [D], "norm.weight")
            b = P.need(name + ".bias", [D], "norm.bias")
            x = F.layer_norm(x, (D,), w, b, ls.get("eps", 1e-5))
        elif kind == "linear":
            w = P.need(name + ".weight", [ls["out"], D], "weight")
            b = P.need(name + ".bias", [ls["out"]], "bias") if ls.get("bias", True) else None
            x = F.linear(x, w, b)
        elif kind == "attention":
            bias, out = ls.get("bias", True), ls.get("out", D)
            P.need(name + ".qkv.weight", [3 * D, D], "weight")
            P.need(name + ".out.weight", [out, D], "weight")
            if bias:
                P.need(name + ".qkv.bias", [3 * D], "bias")
                P.need(name + ".out.bias", [out], "bias")
            x = attention(x, valid, P.t, name, ls["heads"], ls.get("causal", False), bias)
        elif kind == "residual":
            skip = x
            x = run_layers(ls["layers"], x, valid, P, name)
            if ls.get("proj", False):
                w = P.need(name + ".proj.weight", [x.shape[-1], D], "weight")
                skip = F.linear(skip, w, P.need(name + ".proj.bias", [x.shape[-1]], "bias"))
            x = x + skip
        elif kind == "meanpool":
            m = valid[..., None].to(x.dtype)
            x = (x * m).sum(dim=1) / m.sum(dim=1)
        elif kind == "l2norm":
            ss = (x * x).sum(dim=-1, keepdim=True)
            x = x / torch.sqrt(torch.clamp(ss, min=ls.get("eps", 1e-12)))
        elif kind == "relu":
            x = torch.relu(x)
        elif kind == "gelu":
            x = F.gelu(x)
        elif kind == "tanh":
            x = torch.tanh(x)
        elif kind == "lmhead":
            x = F.linear(x, P.t[ls["tie"] + ".weight"])
        else:
            raise ValueError("no reference for layer type " + kind)
    return x


def is_lm(arch):
    return arch["layers"][-1]["type"] == "lmhead"


def reference(arch, P, x, labels, dtype):
    """Output, loss and {name: gradient} of the mean cross-entropy (a language model's:
    next-token), by autograd."""
    L = P.leaves(dtype)
    out = run_layers(arch["layers"], x.to(dtype), None, L, None)
    if is_lm(arch):
        V = out.shape[-1]
        loss = F.cross_entropy(out[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1).long(),
                               ignore_index=-1)
    else:
        loss = F.cross_entropy(out, labels)
    loss.backward()
    return out.detach(), loss.item(), {k: v.grad for k, v in L.t.items()}


# ---- models and batches -----------------------------------------------------------------

EMB = {"type": "embedding", "vocab": 13, "dim": 12, "pad": True}
ENCODER = {
    "input": [9],
    "layers": [
        EMB,
        {"type": "positions", "kind": "sinusoidal"},
        {"type": "residual", "proj": True, "layers": [
            {"type": "layernorm"}, {"type": "attention", "heads": 2, "out": 16}]},
        {"type": "residual", "layers": [
            {"type": "layernorm"}, {"type": "linear", "out": 24}, {"type": "relu"},
            {"type": "linear", "out": 16}]},
        {"type": "residual", "layers": [
            {"type": "layernorm", "eps": 1e-6},
            {"type": "attention", "heads": 4, "causal": True}]},
        {"type": "meanpool"},
        {"type": "linear", "out": 10},
        {"type": "tanh"},
        {"type": "l2norm"},
        {"type": "linear", "name": "head", "out": 3},
    ],
}
LEARNED = {
    "input": [9],
    "layers": [
        EMB,
        {"type": "positions", "kind": "learned", "name": "pos"},
        {"type": "residual", "name": "outer", "layers": [
            {"type": "residual", "layers": [
                {"type": "layernorm"},
                {"type": "attention", "heads": 3, "causal": True, "bias": False}]},
            {"type": "layernorm"}, {"type": "linear", "out": 20}, {"type": "gelu"},
            {"type": "linear", "out": 12}]},
        {"type": "layernorm", "name": "final_norm"},
        {"type": "meanpool"},
        {"type": "linear", "name": "head", "out": 4},
    ],
}


def use_lite(classes):
    with open(os.path.join(HERE, "data", "use_lite_arch.json")) as f:
        arch = json.load(f)
    arch["layers"].append({"type": "linear", "name": "head", "out": classes})
    return arch


def batch(gen, lengths, T, vocab, classes):
    """Token ids (random, -1 after each length) and labels, both as float32."""
    x = torch.full((len(lengths), T), -1.0)
    for n, L in enumerate(lengths):
        x[n, :L] = torch.randint(0, vocab, (L,), generator=gen).float()
    labels = torch.randint(0, classes, (len(lengths),), generator=gen)
    return x, labels


def st_grad(tmp, model_path, x, labels, extra=()):
    bpath, opath = os.path.join(tmp, "batch.safetensors"), os.path.join(tmp, "out.safetensors")
    write_safetensors(bpath, [("x", x), ("labels", labels.float())])
    r = subprocess.run([ST_GRAD, model_path, bpath, opath, *extra], capture_output=True,
                       text=True)
    if r.returncode != 0:
        print("st_grad failed: " + r.stderr.strip())
        return None
    return read_safetensors(opath)[0]


def compare(what, arch, P, x, labels, tmp, freeze=None):
    """One st_grad run against torch float64 (and float32, for scale)."""
    path = os.path.join(tmp, "model.safetensors")
    write_safetensors(path, sorted(P.t.items()), {"fedtune.arch": json.dumps(arch)})
    ours = st_grad(tmp, path, x, labels, ["--freeze", freeze] if freeze else [])
    if ours is None:
        check(False, what + ": st_grad ran")
        return
    out64, loss64, g64 = reference(arch, P, x, labels, torch.float64)
    out32, _, g32 = reference(arch, P, x, labels, torch.float32)
    if is_lm(arch):  # (N, T, V) at the real tokens only: padding rows are nobody's
        valid = x >= 0
        ours["output"] = ours["output"].reshape(out64.shape)[valid]
        out64, out32 = out64[valid], out32[valid]
    scale = max(1.0, out64.abs().max().item())
    d_out = (ours["output"].double() - out64).abs().max().item()
    d_loss = abs(ours["loss"].item() - loss64)
    check(d_out <= TOL * scale and d_loss <= TOL * max(1.0, loss64),
          "%s: output max abs diff %.2e (torch float32: %.2e), loss %.6f diff %.2e" %
          (what, d_out, (out32.double() - out64).abs().max().item(), loss64, d_loss))
    trainable = sorted(k for k in P.t if freeze is None or k.startswith("head.") or
                       (is_lm(arch) and ".m." in k))
    got = sorted(k[len("grad."):] for k in ours if k.startswith("grad."))
    check(got == trainable, "%s: gradients of exactly the %d trainable tensors (got %d)" %
          (what, len(trainable), len(got)))
    gmax = max(g64[k].abs().max().item() for k in trainable)
    worst_all = 0.0
    for k in trainable:
        if "grad." + k not in ours:
            continue
        ref = g64[k]
        d = (ours["grad." + k].double() - ref).abs().max().item()
        d32 = (g32[k].double() - ref).abs().max().item()
        worst_all = max(worst_all, d / gmax)
        print("     %-26s max|g| %.3e  fedtune diff %.2e (%.1e of the largest)  torch32 %.2e" %
              (k, ref.abs().max().item(), d, d / gmax, d32))
    check(worst_all <= TOL, "%s: every gradient within %g of the largest (%.3e): worst %.2e" %
          (what, TOL, gmax, worst_all))


def small_models(tmp):
    for i, (name, arch) in enumerate([("encoder", ENCODER), ("learned", LEARNED)]):
        gen = torch.Generator().manual_seed(1700 + i)
        T, classes = arch["input"][0], arch["layers"][-1]["out"]
        P = Params(gen)
        run_layers(arch["layers"], torch.zeros(1, T), None, P, None)  # draws every tensor
        for lengths in ([T, 1, 4, 8, 2, 6], [3, 1, 4]):
            x, labels = batch(gen, lengths, T, 13, classes)
            compare("%s, lengths %s" % (name, lengths), arch, P, x, labels, tmp)


def block(name):
    return [
        {"type": "residual", "name": name + ".a", "layers": [
            {"type": "layernorm"}, {"type": "attention", "heads": 2, "causal": True}]},
        {"type": "residual", "name": name + ".m", "layers": [
            {"type": "layernorm"}, {"type": "linear", "out": 48}, {"type": "gelu"},
            {"type": "linear", "out": 12}]},
    ]


GPT = {
    "input": [9],
    "layers": [
        {"type": "embedding", "vocab": 13, "dim": 12, "pad": True, "name": "wte"},
        {"type": "positions", "kind": "learned", "name": "wpe"},
        *block("h0"), *block("h1"),
        {"type": "layernorm", "name": "ln_f"},
        {"type": "lmhead", "tie": "wte"},
    ],
}


def gpt_model(tmp):
    gen = torch.Generator().manual_seed(1800)
    P = Params(gen)
    run_layers(GPT["layers"], torch.zeros(1, 9), None, P, None)
    for lengths in ([9, 1, 4, 8, 2, 6], [3, 1, 5]):
        x, _ = batch(gen, lengths, 9, 13, 1)
        labels = torch.zeros(len(lengths), dtype=torch.long)
        compare("gpt, lengths %s" % lengths, GPT, P, x, labels, tmp)
    compare("gpt, MLPs only", GPT, P, x, labels, tmp, freeze="wte.*,wpe.*,*.a.*,ln_f.*")


def use_lite_model(tmp):
    arch = use_lite(5)
    gen = torch.Generator().manual_seed(1717)
    P = Params(gen)
    run_layers(arch["layers"], torch.zeros(1, 128), None, P, None)
    x, labels = batch(gen, [128, 1, 15, 61], 128, 8002, 5)
    compare("USE-lite all trainable", arch, P, x, labels, tmp)
    compare("USE-lite head only", arch, P, x, labels, tmp, freeze="embed.*,l0.*,l1.*,pool.*")


# ---- st_grad on malformed batches -------------------------------------------------------


def refuses(tmp, model, tensors, want, what, extra=()):
    bpath = os.path.join(tmp, "bad.safetensors")
    if isinstance(tensors, bytes):
        with open(bpath, "wb") as f:
            f.write(tensors)
    else:
        write_safetensors(bpath, tensors)
    r = subprocess.run([ST_GRAD, model, bpath, os.path.join(tmp, "never.safetensors"), *extra],
                       capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 1 and len(lines) == 1 and want in r.stderr and
          not os.path.exists(os.path.join(tmp, "never.safetensors")),
          "st_grad refuses %s: exit %d, %r" % (what, r.returncode, r.stderr.strip()))


def malformed(tmp):
    gen = torch.Generator().manual_seed(5)
    P = Params(gen)
    run_layers(ENCODER["layers"], torch.zeros(1, 9), None, P, None)
    model = os.path.join(tmp, "model.safetensors")
    write_safetensors(model, sorted(P.t.items()), {"fedtune.arch": json.dumps(ENCODER)})
    x, labels = batch(gen, [9, 2], 9, 13, 3)
    lab = labels.float()
    refuses(tmp, model, [("x", x[:, :8]), ("labels", lab)],
            'tensor "x": shape must be (N, 9)', "a batch of the wrong width")
    refuses(tmp, model, [("x", x[0]), ("labels", lab)],
            'tensor "x": shape must be (N, 9) with N in [1, 4096], got 1 dimension(s)',
            "a one-dimensional x")
    refuses(tmp, model, [("x", x)], 'tensor "labels" missing', "a batch without labels")
    refuses(tmp, model, [("x", x), ("labels", lab[:1])],
            'tensor "labels": shape must be (2)', "too few labels")
    refuses(tmp, model, [("x", x), ("labels", torch.tensor([0.0, 3.0]))],
            'tensor "labels": entry 1 is 3, not a class id in [0, 3)', "a label >= classes")
    refuses(tmp, model, [("x", x), ("labels", torch.tensor([1.5, 0.0]))],
            "entry 0 is 1.5, not a class id", "a fractional label")
    refuses(tmp, model, [("x", x), ("labels", torch.tensor([float("nan"), 0.0]))],
            "entry 0 is nan, not a class id", "a NaN label")
    big = x.clone()
    big[1, 1] = 13.0
    refuses(tmp, model, [("x", big), ("labels", lab)],
            "example 1 position 1: token id 13 is not an integer in [0, 13)", "an id >= vocab")
    gap = x.clone()
    gap[1, 0], gap[1, 1], gap[1, 2] = -1.0, 4.0, -1.0
    refuses(tmp, model, [("x", gap), ("labels", lab)],
            "example 1: token id at position 1 follows padding", "an id after padding")
    empty = x.clone()
    empty[0, :] = -1.0
    refuses(tmp, model, [("x", empty), ("labels", lab)],
            "example 0 is empty (padding only)", "an empty sentence")
    good = os.path.join(tmp, "good.safetensors")
    write_safetensors(good, [("x", x), ("labels", lab)])
    with open(good, "rb") as f:
        raw = f.read()
    refuses(tmp, model, raw[:-5], "bad.safetensors", "a truncated batch file")
    refuses(tmp, model, raw[:6], "bad.safetensors", "a 6-byte batch file")
    refuses(tmp, model, [("x", x), ("labels", lab)], 'matches no tensor',
            "a --freeze pattern that matches nothing", ["--freeze", "nosuch.*"])
    r = subprocess.run([ST_GRAD, model], capture_output=True, text=True)
    check(r.returncode == 2 and r.stderr.startswith("usage: st_grad"),
          "st_grad without a batch: usage, exit %d" % r.returncode)


def main():
    with tempfile.TemporaryDirectory(prefix="fedtune-interop-tf-") as tmp:
        small_models(tmp)
        gpt_model(tmp)
        use_lite_model(tmp)
        malformed(tmp)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
