"""Writes deliberately wrong models, for tests/fed_e2e.sh to prove that fedavg_check.py
refuses a federation whose aggregation is off (a check that cannot fail proves nothing).
Rewrites the tensor bytes of a safetensors file in place; the header is kept.

    fedavg_forge.py unweighted MODEL OLD ROUND DIR...
        MODEL := OLD + the plain mean of the sites' round-ROUND deltas (DIR/round-NNNNNN
        .safetensors): a FedAvg that ignores the example counts
    fedavg_forge.py nudge MODEL ULPS
        moves MODEL's largest-magnitude value ULPS float32 steps away from zero
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fedavg_check import read_st  # noqa: E402  (one safetensors reader for both tools)


def main(argv):
    mode, path = argv[1], argv[2]
    with open(path, "rb") as f:
        b = bytearray(f.read())
    _, model = read_st(path)
    if mode == "unweighted":
        _, old = read_st(argv[3])
        r = int(argv[4])
        ds = [read_st(os.path.join(d, "round-%06d.safetensors" % r))[1] for d in argv[5:]]
        for name, (off, _) in model.items():
            v = old[name][1] + sum(d[name][1] for d in ds) / np.float32(len(ds))
            b[off:off + 4 * v.size] = v.astype("<f4").tobytes()
    elif mode == "nudge":
        name, i = max(((n, int(np.argmax(np.abs(t)))) for n, (_, t) in model.items()),
                      key=lambda p: abs(model[p[0]][1][p[1]]))
        off = model[name][0] + 4 * i
        bits = np.frombuffer(bytes(b[off:off + 4]), "<i4")[0] + int(argv[3])
        b[off:off + 4] = np.array([bits], "<i4").tobytes()
        print("%s[%d]: %.9g -> %.9g" % (name, i, model[name][1][i], np.frombuffer(bytes(b[off:off + 4]), "<f4")[0]))
    else:
        sys.exit("fedavg_forge.py: unknown mode %r" % mode)
    with open(path, "wb") as f:
        f.write(b)


if __name__ == "__main__":
    main(sys.argv)
