#!/usr/bin/env python3
"""An independent FedAvg for the 2NN, in plain numpy, to cross-check `fedtune sim`.

Same set-up as run.sh's 2NN settings (100 clients of 600 examples, C = 0.1, B = 10,
E = 1, plain SGD on the mean cross-entropy, FedAvg weighted by examples, test accuracy
after every round), but nothing shared with fedtune: its own partition, sampling,
initialisation and training loop. It prints the first round whose test accuracy
reaches the target. Needs numpy (Debian: python3-numpy); ~10 s for IID, ~1 min non-IID.

    crosscheck_numpy.py iid 0.1            # partition (iid|shards) and learning rate
    crosscheck_numpy.py shards 0.2 --rounds 600 --seed 2 --init glorot
"""
import argparse
import os
import time

import numpy as np

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("partition", choices=["iid", "shards"])
ap.add_argument("lr", type=float)
ap.add_argument("--rounds", type=int, default=600)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--init", choices=["he", "glorot", "torch"], default="he",
                help="he: U(+-sqrt(6/fan_in)), fedtune's 'kaiming'; glorot: Xavier uniform; "
                     "torch: U(+-1/sqrt(fan_in))")
ap.add_argument("--target", type=float, default=0.97)
ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "..", "..", "data", "mnist"))
a = ap.parse_args()


def images(name):
    return np.fromfile(os.path.join(a.data, name), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255


def labels(name):
    return np.fromfile(os.path.join(a.data, name), np.uint8, offset=8).astype(np.int64)


X, Y = images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")
Xt, Yt = images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte")
rng = np.random.default_rng(a.seed)
K = 100
if a.partition == "iid":
    perm = rng.permutation(len(Y))
    clients = [perm[i * 600:(i + 1) * 600] for i in range(K)]
else:  # the paper's pathological split: sort by label, 200 shards of 300, 2 per client
    order = np.argsort(Y, kind="stable")
    shards = [order[i * 300:(i + 1) * 300] for i in range(200)]
    sp = rng.permutation(200)
    clients = [np.concatenate([shards[sp[2 * i]], shards[sp[2 * i + 1]]]) for i in range(K)]

sizes = [(784, 200), (200, 200), (200, 10)]
G = []
for fi, fo in sizes:
    lim = {"he": np.sqrt(6 / fi), "glorot": np.sqrt(6 / (fi + fo)), "torch": 1 / np.sqrt(fi)}[a.init]
    G += [rng.uniform(-lim, lim, (fi, fo)).astype(np.float32), np.zeros(fo, np.float32)]


def forward(P, x):
    h1 = np.maximum(x @ P[0] + P[1], 0)
    h2 = np.maximum(h1 @ P[2] + P[3], 0)
    return h1, h2, h2 @ P[4] + P[5]


t0 = time.time()
acc = 0.0
for r in range(1, a.rounds + 1):
    new = [np.zeros_like(p) for p in G]
    for c in rng.choice(K, 10, replace=False):
        P = [p.copy() for p in G]
        ix = rng.permutation(clients[c])
        for b in range(0, len(ix), 10):
            x, y = X[ix[b:b + 10]], Y[ix[b:b + 10]]
            h1, h2, z = forward(P, x)
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            dz = p / len(y)
            dh2 = (dz @ P[4].T) * (h2 > 0)
            dh1 = (dh2 @ P[2].T) * (h1 > 0)
            grads = [x.T @ dh1, dh1.sum(0), h1.T @ dh2, dh2.sum(0), h2.T @ dz, dz.sum(0)]
            for q, g in zip(P, grads):
                q -= a.lr * g
        for n, q in zip(new, P):
            n += q / 10  # every client holds 600 examples: equal weights
    G = new
    acc = (forward(G, Xt)[2].argmax(1) == Yt).mean()
    if acc >= a.target:
        print(f"{a.partition} lr {a.lr} init {a.init} seed {a.seed}: test accuracy {acc:.4f} >= "
              f"{a.target} first in round {r} ({time.time() - t0:.0f} s)")
        break
else:
    print(f"{a.partition} lr {a.lr} init {a.init} seed {a.seed}: {a.target} not reached in "
          f"{a.rounds} rounds (last accuracy {acc:.4f})")
