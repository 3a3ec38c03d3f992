#!/usr/bin/python3
"""PyTorch reference side of the fedtune-vs-PyTorch benchmark (centralised MNIST).

Run with Debian's interpreter and torch (python3-torch, CPU):
    /usr/bin/python3 bench/bench_torch.py --data data --model 2nn --batch 64 --epochs 1

Data: DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte (raw IDX, from
scripts/fetch-data), read with numpy; pixels scaled to [0, 1], then standardised with
mean 0.1307 and std 0.3081.

Models match fedtune's presets (core/arch.c) layer for layer, so that tensor names agree
with fedtune's (torch.nn.Sequential numbering, see core/model.h):
    2nn  fedavg-2nn, input [784]: 0 Linear(784,200) 1 ReLU 2 Linear(200,200) 3 ReLU
         4 Linear(200,10)                                            199,210 parameters
    cnn  fedavg-cnn, input [1,28,28]: 0 Conv2d(1,32,5,pad 2) 1 ReLU 2 MaxPool2d(2)
         3 Conv2d(32,64,5,pad 2) 4 ReLU 5 MaxPool2d(2) 6 Flatten 7 Linear(3136,512)
         8 ReLU 9 Linear(512,10)                                   1,663,370 parameters
The 2NN has no Flatten layer (fedtune's preset takes a flat 784 input); images are
reshaped before the model instead, so its tensors are 0.*, 2.*, 4.* as in fedtune.

Training: softmax cross-entropy (mean over the batch), plain torch.optim.SGD (lr,
momentum), the last batch of an epoch may be smaller (as fedtune). Order: --order FILE
holds epochs*60000 little-endian uint32 indices (epoch e uses entries e*60000 ..
(e+1)*60000-1); without it, torch's RandomSampler with a generator seeded by --seed.
--init FILE.safetensors loads the initial weights (F32, F16 or BF16) so both frameworks
start from identical weights; otherwise torch's default init under torch.manual_seed.

Output: one JSON line. train_seconds covers the training loop only (batch gathering,
forward, backward, step), not data loading nor the test pass; final_train_loss is the
mean loss over the last epoch, weighted by batch size (fedtune's train_loss).
"""

import argparse
import json
import os
import struct
import sys
import time

# numpy and torch are imported by import_libs once the thread count is known.
np = torch = nn = None

MEAN, STD = 0.1307, 0.3081
TRAIN_N = 60000


def fail(msg):
    print(f"bench_torch: {msg}", file=sys.stderr)
    sys.exit(1)


def import_libs(threads):
    """Imports numpy and torch with every thread pool sized to `threads`. Debian's numpy
    and torch both call OpenBLAS (pthreads build), whose pool torch.set_num_threads does
    not govern: it would take all cores, so it is sized by environment before the first
    of them loads the library."""
    global np, torch, nn
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import numpy as _np
    import torch as _torch
    import torch.nn as _nn
    np, torch, nn = _np, _torch, _nn
    torch.set_num_threads(threads)


# ---- data ------------------------------------------------------------------------------

def read_idx(path, want_ndim):
    """An IDX file (big-endian header: 0, 0, type 0x08 = uint8, ndim; then dims)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(f"{path}: {e.strerror} (run scripts/fetch-data --only mnist)")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        fail(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    if ndim != want_ndim or len(data) < 4 + 4 * ndim:
        fail(f"{path}: {ndim} dimensions, expected {want_ndim}")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        fail(f"{path}: {body.size} bytes of data, header says {dims}")
    return body.reshape(dims)


def load_mnist(root, split):
    d = os.path.join(root, "mnist")
    x = read_idx(os.path.join(d, f"{split}-images-idx3-ubyte"), 3)
    y = read_idx(os.path.join(d, f"{split}-labels-idx1-ubyte"), 1)
    if x.shape[0] != y.shape[0] or x.shape[1:] != (28, 28):
        fail(f"{d}: {split} images {x.shape} and labels {y.shape} disagree")
    x = (x.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def read_order(path, epochs, n):
    want = epochs * n
    try:
        size = os.path.getsize(path)
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    if size != 4 * want:
        fail(f"{path}: {size} bytes, expected {4 * want} ({epochs} epochs x {n} uint32)")
    order = np.fromfile(path, dtype="<u4")
    if order.max(initial=0) >= n:
        fail(f"{path}: index {int(order.max())} out of range (n = {n})")
    return torch.from_numpy(order.astype(np.int64)).view(epochs, n)


# ---- models ----------------------------------------------------------------------------

def make_model(kind):
    if kind == "2nn":
        return nn.Sequential(
            nn.Linear(784, 200), nn.ReLU(),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512), nn.ReLU(),
        nn.Linear(512, 10))


# ---- safetensors (pure Python: struct + json) ------------------------------------------

def read_safetensors(path):
    """{name: float32 numpy array}; validates the header against the file size."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    if len(data) < 8:
        fail(f"{path}: too short for a safetensors file")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        fail(f"{path}: header length {hlen} beyond the file ({len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{path}: bad JSON header: {e}")
    body = memoryview(data)[8 + hlen:]
    sizes = {"F32": 4, "F16": 2, "BF16": 2}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = t["dtype"], t["shape"], t["data_offsets"]
        if dtype not in sizes:
            fail(f"{path}: tensor {name}: dtype {dtype} not supported (F32, F16, BF16)")
        numel = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(body)) or end - begin != numel * sizes[dtype]:
            fail(f"{path}: tensor {name}: byte range [{begin}, {end}) does not fit "
                 f"shape {shape} {dtype}")
        raw = body[begin:end]
        if dtype == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(np.float32).reshape(shape)
    return out


def load_init(model, path):
    tensors = read_safetensors(path)
    state = model.state_dict()
    missing = sorted(set(state) - set(tensors))
    extra = sorted(set(tensors) - set(state))
    if missing or extra:
        fail(f"{path}: tensors do not match the model (missing {missing}, unexpected {extra})")
    for name, ref in state.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            fail(f"{path}: tensor {name}: shape {list(tensors[name].shape)}, "
                 f"model wants {list(ref.shape)}")
        state[name] = torch.from_numpy(tensors[name].copy())
    model.load_state_dict(state)


# ---- main ------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("FEDTUNE_DATA", "data"),
                   help="folder holding mnist/ (default: $FEDTUNE_DATA or data)")
    p.add_argument("--model", choices=["2nn", "cnn"], default="2nn")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--order", metavar="FILE", help="epochs*60000 little-endian uint32 indices")
    p.add_argument("--init", metavar="FILE", help="initial weights (.safetensors)")
    a = p.parse_args()
    if a.batch < 1 or a.epochs < 1 or a.threads < 1 or a.lr <= 0 or not 0 <= a.momentum < 1:
        fail("need --batch, --epochs, --threads >= 1, --lr > 0, 0 <= --momentum < 1")

    import_libs(a.threads)
    torch.manual_seed(a.seed)

    xtr, ytr = load_mnist(a.data, "train")
    xte, yte = load_mnist(a.data, "t10k")
    n = xtr.shape[0]
    if n != TRAIN_N:
        fail(f"{a.data}/mnist: {n} training images, expected {TRAIN_N}")
    if a.model == "2nn":
        xtr, xte = xtr.reshape(n, 784), xte.reshape(xte.shape[0], 784)
    xtr, xte = xtr.contiguous(), xte.contiguous()

    model = make_model(a.model)
    if a.init:
        load_init(model, a.init)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    loss_fn = nn.CrossEntropyLoss()

    if a.order:
        orders = read_order(a.order, a.epochs, n)
        epoch_order = lambda e: orders[e]  # noqa: E731
    else:
        gen = torch.Generator()
        gen.manual_seed(a.seed)
        sampler = torch.utils.data.RandomSampler(range(n), generator=gen)
        epoch_order = lambda e: torch.tensor(list(sampler), dtype=torch.int64)  # noqa: E731
    orders = [epoch_order(e) for e in range(a.epochs)]  # drawn before the clock starts

    model.train()
    final_loss = float("nan")
    t0 = time.perf_counter()
    for e in range(a.epochs):
        order = orders[e]
        total = torch.zeros((), dtype=torch.float64)
        for i in range(0, n, a.batch):
            idx = order[i:i + a.batch]
            xb, yb = xtr.index_select(0, idx), ytr.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        final_loss = total.item() / n
    train_seconds = time.perf_counter() - t0

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 1000):
            correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()

    print(json.dumps({
        "framework": "pytorch",
        "torch": torch.__version__,
        "model": a.model,
        "batch": a.batch,
        "epochs": a.epochs,
        "threads": a.threads,
        "train_seconds": round(train_seconds, 4),
        "examples_per_s": round(a.epochs * n / train_seconds, 1),
        "test_accuracy": round(correct / xte.shape[0], 4),
        "final_train_loss": round(final_loss, 5),
    }))


if __name__ == "__main__":
    main()
