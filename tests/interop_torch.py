"""PyTorch <-> fedtune through safetensors files, both directions.

Direction 1: torch.nn.Sequential models (an MLP and two CNNs covering every layer kind
fedtune shares with PyTorch) are written as safetensors (safetensors_io.py), with
the matching fedtune architecture in __metadata__["fedtune.arch"]; st_forward runs them
on fixed inputs and its outputs must match torch's within 1e-5. F16 and BF16 copies of
the MLP must match torch computing with the same rounded weights.

Direction 2: st_forward --save writes fedtune-initialised models; they are read back,
loaded into the same Sequential with load_state_dict(strict=True), and
both sides must again agree within 1e-5.

Usage: interop_torch.py PATH/TO/st_forward
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
from torch import nn

from safetensors_io import read_safetensors, write_safetensors

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

ST_FORWARD = sys.argv[1]
N = 100  # examples: more than one st_forward batch of 64
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


# ---- models: the torch module and the fedtune architecture that corresponds -------------


def mlp():
    model = nn.Sequential(
        nn.Linear(10, 16),  # 0
        nn.ReLU(),  # 1
        nn.Linear(16, 16),  # 2
        nn.GELU(),  # 3
        nn.LayerNorm(16),  # 4
        nn.Dropout(0.3),  # 5: identity in eval mode, but it shifts the indices
        nn.Linear(16, 12),  # 6
        nn.Tanh(),  # 7
        nn.Linear(12, 5, bias=False),  # 8
        nn.Sigmoid(),  # 9
    )
    arch = {
        "input": [10],
        "layers": [
            {"type": "linear", "out": 16},
            {"type": "relu"},
            {"type": "linear", "out": 16},
            {"type": "gelu"},
            {"type": "layernorm", "eps": 1e-5},
            {"type": "dropout", "p": 0.3},
            {"type": "linear", "out": 12},
            {"type": "tanh"},
            {"type": "linear", "out": 5, "bias": False},
            {"type": "sigmoid"},
        ],
    }
    return model, arch, (10,)


def cnn():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=1, padding=1),  # 0: 8x12x12
        nn.ReLU(),  # 1
        nn.MaxPool2d(2),  # 2: 8x6x6
        nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False),  # 3: 6x3x3
        nn.Tanh(),  # 4
        nn.AvgPool2d(2, stride=1),  # 5: 6x2x2
        nn.Flatten(),  # 6: 24
        nn.Linear(24, 7),  # 7
    )
    arch = {
        "input": [3, 12, 12],
        "layers": [
            {"type": "conv2d", "out": 8, "k": 3, "stride": 1, "pad": 1},
            {"type": "relu"},
            {"type": "maxpool2d", "k": 2},
            {"type": "conv2d", "out": 6, "k": 3, "stride": 2, "pad": 1, "bias": False},
            {"type": "tanh"},
            {"type": "avgpool2d", "k": 2, "stride": 1},
            {"type": "flatten"},
            {"type": "linear", "out": 7},
        ],
    }
    return model, arch, (3, 12, 12)


def cnn2():
    model = nn.Sequential(
        nn.Conv2d(2, 5, 5, stride=2, padding=2),  # 0: 5x8x7
        nn.GELU(),  # 1
        nn.MaxPool2d(3, stride=2),  # 2: 5x3x3
        nn.Conv2d(5, 4, 2),  # 3: 4x2x2
        nn.Sigmoid(),  # 4
        nn.AdaptiveAvgPool2d(1),  # 5: 4x1x1
        nn.Flatten(),  # 6
        nn.LayerNorm(4),  # 7
        nn.Linear(4, 3),  # 8
    )
    arch = {
        "input": [2, 15, 13],
        "layers": [
            {"type": "conv2d", "out": 5, "k": 5, "stride": 2, "pad": 2},
            {"type": "gelu"},
            {"type": "maxpool2d", "k": 3, "stride": 2},
            {"type": "conv2d", "out": 4, "k": 2},
            {"type": "sigmoid"},
            {"type": "globalavgpool"},
            {"type": "flatten"},
            {"type": "layernorm"},
            {"type": "linear", "out": 3},
        ],
    }
    return model, arch, (2, 15, 13)


def randomize(model):
    """Layer norms start at 1 and 0 in torch; make every value count."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def write_f32(path, t):
    flat = t.contiguous().reshape(-1).tolist()
    with open(path, "wb") as f:
        f.write(struct.pack("<%df" % len(flat), *flat))


def read_f32(path, shape):
    with open(path, "rb") as f:
        buf = f.read()
    vals = struct.unpack("<%df" % (len(buf) // 4), buf)
    return torch.tensor(vals, dtype=torch.float32).reshape(shape)


def st_forward(tmp, model_path, x, out_features, arch=None):
    xin, yout = os.path.join(tmp, "x.f32"), os.path.join(tmp, "y.f32")
    write_f32(xin, x)
    cmd = [ST_FORWARD, model_path, xin, str(x.shape[0]), yout]
    if arch is not None:
        cmd += ["--arch", json.dumps(arch)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("st_forward failed: " + r.stderr.strip())
        return None
    return read_f32(yout, (x.shape[0], out_features))


def compare(what, ours, ref, tol):
    if ours is None:
        check(False, what + ": st_forward failed")
        return
    diff = (ours - ref).abs().max().item()
    check(diff <= tol, "%s: max abs diff %.3g (tolerance %g)" % (what, diff, tol))


# ---- direction 1: torch writes, fedtune runs -------------------------------------------


def torch_to_fedtune(tmp):
    for i, (name, build) in enumerate([("mlp", mlp), ("cnn", cnn), ("cnn2", cnn2)]):
        torch.manual_seed(100 + i)
        model, arch, in_shape = build()
        randomize(model)
        model.eval()
        x = torch.randn(N, *in_shape)
        with torch.no_grad():
            ref = model(x)
        tensors = list(model.state_dict().items())
        path = os.path.join(tmp, name + ".safetensors")
        if name == "cnn":
            # No metadata: st_forward builds from --arch and loads the weights by name.
            write_safetensors(path, tensors)
            ours = st_forward(tmp, path, x, ref.shape[1], arch=arch)
            compare("torch -> fedtune %s (--arch, strict by name)" % name, ours, ref, TOL)
        else:
            write_safetensors(path, tensors, {"fedtune.arch": json.dumps(arch), "by": "torch"})
            ours = st_forward(tmp, path, x, ref.shape[1])
            compare("torch -> fedtune %s (arch from metadata)" % name, ours, ref, TOL)

        if name != "mlp":
            continue
        # Half precision on disk: fedtune widens exactly, so it must agree with torch
        # running in float32 on the same rounded weights.
        for dtype, torch_dtype in (("F16", torch.float16), ("BF16", torch.bfloat16)):
            rounded = [(k, v.to(torch_dtype).float()) for k, v in tensors]
            path = os.path.join(tmp, "mlp-%s.safetensors" % dtype)
            write_safetensors(path, tensors, {"fedtune.arch": json.dumps(arch)}, dtype=dtype)
            ref_model, _, _ = build()
            ref_model.load_state_dict(dict(rounded), strict=True)
            ref_model.eval()
            with torch.no_grad():
                ref_r = ref_model(x)
                drift = (ref_r - ref).abs().max().item()
            ours = st_forward(tmp, path, x, ref.shape[1])
            compare("torch -> fedtune mlp %s (rounding alone moves outputs by %.3g)" % (dtype, drift),
                    ours, ref_r, 1e-4)


# ---- direction 2: fedtune writes, torch loads -------------------------------------------


def fedtune_to_torch(tmp):
    for i, (name, build) in enumerate([("mlp", mlp), ("cnn", cnn), ("cnn2", cnn2)]):
        model, arch, in_shape = build()
        path = os.path.join(tmp, "fedtune-%s.safetensors" % name)
        r = subprocess.run([ST_FORWARD, "--save", path, "--arch", json.dumps(arch)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            check(False, "st_forward --save %s: %s" % (name, r.stderr.strip()))
            continue
        state, metadata, hlen = read_safetensors(path)
        check((8 + hlen) % 8 == 0, "fedtune %s: data section 8-byte aligned" % name)
        check(json.loads(metadata.get("fedtune.arch", "null")) is not None and
              metadata.get("fedtune.version", "").startswith("fedtune") and
              metadata.get("fedtune.frozen") == "[]",
              "fedtune %s: metadata %s" % (name, sorted(metadata)))
        try:
            model.load_state_dict(state, strict=True)
            loaded = True
        except RuntimeError as e:
            print(e)
            loaded = False
        check(loaded, "fedtune -> torch %s: load_state_dict(strict=True)" % name)
        if not loaded:
            continue
        nonzero = sum(int((v != 0).sum()) for k, v in state.items() if k.endswith("weight"))
        check(nonzero > 0, "fedtune %s: initialised weights are not all zero" % name)
        model.eval()
        torch.manual_seed(200 + i)
        x = torch.randn(N, *in_shape)
        with torch.no_grad():
            ref = model(x)
        ours = st_forward(tmp, path, x, ref.shape[1])
        compare("fedtune -> torch %s" % name, ours, ref, TOL)


def main():
    with tempfile.TemporaryDirectory(prefix="fedtune-interop-") as tmp:
        torch_to_fedtune(tmp)
        fedtune_to_torch(tmp)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
