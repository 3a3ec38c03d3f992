#!/usr/bin/python3
"""PyTorch side of the simulator benchmark: plain FedAvg on MNIST (bench_sim_torch.sh).

Run with Debian's interpreter and torch (python3-torch, CPU):
    /usr/bin/python3 bench/fedavg_torch.py --data data --model 2nn --clients 100 \
        --fraction 0.1 --epochs 1 --batch 10 --lr 0.1 --target 0.97

The loop as a researcher writes it (McMahan et al. 2017, Algorithm 1): the 60 000
training images split IID over --clients clients (a seeded permutation dealt in equal
contiguous parts), each round max(1, round(fraction x clients)) clients sampled without
replacement, each starts from a copy of the global model and runs --epochs passes of
plain SGD over its own examples in batches of --batch (reshuffled every epoch, the last
batch may be smaller), the global model becomes the average of the clients' models
weighted by their example counts, and it is evaluated on the 10 000 test images. The run
stops at the first round whose test accuracy reaches --target, or after --rounds.
Batches are gathered with index_select from one float tensor (no DataLoader, whose
per-example overhead would dominate at batch 10). Pixels are scaled to [0, 1], not
standardised (as fedtune sim feeds a fresh preset). Its own RNG (numpy, --seed), so the
split and the sampling are of the same kind as fedtune sim's, not the same draws.
--init FILE.safetensors gives the initial weights (`fedtune init`), else torch's
default initialisation under torch.manual_seed.

Output: one line per round on stderr, then one JSON line on stdout: rounds, whether
the target was reached, seconds to target (set-up excluded: from the first round's
start to the end of the last evaluation), seconds per round, the final accuracy, and
set-up seconds (imports and data loading).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_torch as bt  # noqa: E402  (read_idx, load_mnist, make_model, load_init)


def load_mnist01(root, split):
    """Images as floats in [0, 1] (no standardisation: fedtune sim's fresh presets have
    none), labels as int64."""
    np, torch = bt.np, bt.torch
    d = os.path.join(root, "mnist")
    x = bt.read_idx(os.path.join(d, f"{split}-images-idx3-ubyte"), 3)
    y = bt.read_idx(os.path.join(d, f"{split}-labels-idx1-ubyte"), 1)
    if x.shape[0] != y.shape[0] or x.shape[1:] != (28, 28):
        bt.fail(f"{d}: {split} images {x.shape} and labels {y.shape} disagree")
    x = x.astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def main():
    t_start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("FEDTUNE_DATA", "data"),
                   help="folder holding mnist/ (default: $FEDTUNE_DATA or data)")
    p.add_argument("--model", choices=["2nn", "cnn"], default="2nn")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--target", type=float, default=0.97,
                   help="test accuracy to stop at (0: run --rounds rounds)")
    p.add_argument("--rounds", type=int, default=200, help="most rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--init", metavar="FILE", help="initial weights (.safetensors)")
    a = p.parse_args()
    if (a.clients < 1 or a.epochs < 1 or a.batch < 1 or a.rounds < 1 or a.threads < 1
            or a.lr <= 0 or not 0 < a.fraction <= 1):
        bt.fail("need --clients, --epochs, --batch, --rounds, --threads >= 1, --lr > 0, "
                "0 < --fraction <= 1")

    bt.import_libs(a.threads)
    np, torch, nn = bt.np, bt.torch, bt.nn
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    xtr, ytr = load_mnist01(a.data, "train")
    xte, yte = load_mnist01(a.data, "t10k")
    n = xtr.shape[0]
    if a.model == "2nn":
        xtr, xte = xtr.reshape(n, 784), xte.reshape(xte.shape[0], 784)
    xtr, xte = xtr.contiguous(), xte.contiguous()
    if a.clients > n:
        bt.fail(f"--clients {a.clients}: only {n} training images")

    # IID: a permutation dealt in equal contiguous parts.
    perm = rng.permutation(n)
    parts = [torch.from_numpy(c.astype(np.int64)) for c in np.array_split(perm, a.clients)]
    per_round = max(1, int(round(a.fraction * a.clients)))

    model = bt.make_model(a.model)
    if a.init:
        bt.load_init(model, a.init)
    loss_fn = nn.CrossEntropyLoss()

    def local_update(idx):
        local = bt.make_model(a.model)
        local.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(local.parameters(), lr=a.lr)
        local.train()
        for _ in range(a.epochs):
            order = idx[torch.from_numpy(rng.permutation(idx.numel()))]
            for i in range(0, order.numel(), a.batch):
                b = order[i:i + a.batch]
                opt.zero_grad(set_to_none=True)
                loss_fn(local(xtr.index_select(0, b)), ytr.index_select(0, b)).backward()
                opt.step()
        return local.state_dict()

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, xte.shape[0], 1000):
                correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
        return correct / xte.shape[0]

    setup = time.perf_counter() - t_start
    t0 = time.perf_counter()
    acc, rounds, reached = 0.0, 0, False
    for r in range(1, a.rounds + 1):
        chosen = rng.choice(a.clients, size=per_round, replace=False)
        total = sum(parts[c].numel() for c in chosen)
        avg = None
        for c in chosen:
            w = parts[c].numel() / total
            state = local_update(parts[c])
            if avg is None:
                avg = {k: v * w for k, v in state.items()}
            else:
                for k, v in state.items():
                    avg[k] += v * w
        model.load_state_dict(avg)
        acc = evaluate()
        rounds = r
        print(f"round {r}: test accuracy {acc:.4f}", file=sys.stderr)
        if a.target > 0 and acc >= a.target:
            reached = True
            break
    secs = time.perf_counter() - t0

    print(json.dumps({
        "framework": "pytorch",
        "torch": torch.__version__,
        "model": a.model,
        "threads": a.threads,
        "rounds": rounds,
        "reached": reached,
        "seconds": round(secs, 3),
        "seconds_per_round": round(secs / max(rounds, 1), 4),
        "final_accuracy": round(acc, 4),
        "setup_seconds": round(setup, 3),
    }))


if __name__ == "__main__":
    main()
