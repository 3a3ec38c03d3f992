"""An independent check of a federation's FedAvg, in numpy, sharing no code with fedtune.

    fedavg_check.py INITIAL METRICS.jsonl CHECKPOINT_DIR FINAL CN=DIR...

For every round line of the coordinator's metrics file (in file order, the first round
starting from INITIAL), it reads the model before the round, the model after it
(CHECKPOINT_DIR/round-NNNNNN.safetensors, which must exist; for the last round FINAL,
and the checkpoint too if it exists; each must say that round in fedtune.round) and
each accepted site's own copy of the delta it sent (DIR/round-NNNNNN.safetensors,
written by `fedtune client --save-updates DIR`, for the site named by "cn" in the
line's "accepted" list), and verifies, coordinate by coordinate,

    new = old + sum_k w_k d_k / sum_k w_k       (w_k: the "examples" the metrics record)

the FedAvg server step with server learning rate 1 (the "fedavg" strategy's default);
tensors no site sent (frozen) must be unchanged to the bit. It also checks that each
saved update says the same round and example count as the metrics.

Tolerance. The reference is computed in float64 from the float32 inputs. The coordinator
computes in float32: K products w_k d_k and K-1 additions (w_k is an exact float, an
integer below 2^24), one product by the float 1/W (itself rounded) and one addition to
old. With u = 2^-24 (float32's unit roundoff) the first-order error bound of that
sequence is u * ((K + 2) * A + |new|), A = sum_k w_k |d_k| / W, whatever the order of
the additions; the check allows twice that (second-order terms, an FMA in the kernel),
i.e. a few float32 roundings of the magnitudes involved. A wrong weight, a dropped or
doubled update, or an unweighted mean moves the result by a fraction of the deltas
themselves, orders of magnitude above that.

Exit 0 when every round agrees, 1 naming the first round and coordinate that does not
(or an unreadable input), 2 for bad usage. safetensors is parsed here directly: 8-byte
little-endian header length, a JSON header, the raw little-endian bytes (F32 only).
"""
import json
import os
import struct
import sys

import numpy as np

U = 2.0 ** -24  # float32 unit roundoff


class CheckError(Exception):
    pass


def read_st(path):
    """(metadata dict, {name: (byte offset of the data in the file, float32 array)})."""
    try:
        with open(path, "rb") as f:
            b = f.read()
    except OSError as e:
        raise CheckError("%s: %s" % (path, e.strerror))
    if len(b) < 8:
        raise CheckError("%s: %d bytes, too short for a safetensors file" % (path, len(b)))
    n = struct.unpack("<Q", b[:8])[0]
    if n > len(b) - 8:
        raise CheckError("%s: header length %d runs past the end" % (path, n))
    try:
        header = json.loads(b[8:8 + n])
    except ValueError as e:
        raise CheckError("%s: header is not JSON: %s" % (path, e))
    meta = header.pop("__metadata__", None) or {}
    data = 8 + n
    tensors = {}
    for name, t in header.items():
        if t.get("dtype") != "F32":
            raise CheckError("%s: tensor %s is %s, only F32 is checked" % (path, name, t.get("dtype")))
        begin, end = t["data_offsets"]
        count = int(np.prod(t["shape"], dtype=np.int64))
        if end - begin != 4 * count or data + end > len(b):
            raise CheckError("%s: tensor %s: bad data offsets" % (path, name))
        tensors[name] = (data + begin, np.frombuffer(b, "<f4", count, data + begin))
    return meta, tensors


def check_round(r, line, old, new, new_path, sites):
    if line.get("strategy") != "fedavg":
        raise CheckError("round %d: strategy %r; this check knows FedAvg only" % (r, line.get("strategy")))
    accepted = line.get("accepted")
    if not accepted:
        raise CheckError("round %d: no accepted updates in the metrics" % r)
    deltas, weights = [], []
    for e in accepted:
        cn, w = e["cn"], e["examples"]
        if cn not in sites:
            raise CheckError("round %d: no folder given for site %s" % (r, cn))
        path = os.path.join(sites[cn], "round-%06d.safetensors" % r)
        meta, d = read_st(path)
        if meta.get("fedtune.round") != str(r) or meta.get("fedtune.examples") != str(w):
            raise CheckError("%s: round %s, examples %s; the metrics say round %d, examples %d"
                             % (path, meta.get("fedtune.round"), meta.get("fedtune.examples"), r, w))
        deltas.append(d)
        weights.append(float(w))
    W = sum(weights)
    if set(new) != set(old):
        raise CheckError("%s: tensors %s, expected %s" % (new_path, sorted(new), sorted(old)))
    worst = 0.0
    for name in old:
        o = old[name][1].astype(np.float64)
        got = new[name][1].astype(np.float64)
        sent = [name in d for d in deltas]
        if not any(sent):  # frozen: unchanged to the bit
            if old[name][1].tobytes() != new[name][1].tobytes():
                raise CheckError("round %d: %s: tensor %s changed, but no site sent it" % (r, new_path, name))
            continue
        if not all(sent):
            raise CheckError("round %d: tensor %s missing from some saved updates" % (r, name))
        ds = []
        for k, d in enumerate(deltas):
            if d[name][1].size != o.size:
                raise CheckError("round %d: site %s: tensor %s has %d values, the model %d"
                                 % (r, accepted[k]["cn"], name, d[name][1].size, o.size))
            ds.append(d[name][1].astype(np.float64))
        mean = sum(w * d for w, d in zip(weights, ds)) / W
        absmean = sum(w * np.abs(d) for w, d in zip(weights, ds)) / W
        want = o + mean
        tol = 2 * U * ((len(ds) + 2) * absmean + np.abs(got))
        err = np.abs(got - want)
        bad = np.flatnonzero(err > tol)
        if bad.size:
            i = bad[0]
            raise CheckError("round %d: %s: %s[%d] is %.9g, FedAvg gives %.9g (error %.3g > "
                             "tolerance %.3g; %d of %d coordinates off)"
                             % (r, new_path, name, i, got[i], want[i], err[i], tol[i], bad.size, o.size))
        worst = max(worst, float(np.max(err / np.maximum(tol, np.finfo(np.float64).tiny))))
    return len(accepted), worst


def main(argv):
    if len(argv) < 6 or any("=" not in a for a in argv[5:]):
        sys.stderr.write("usage: fedavg_check.py INITIAL METRICS.jsonl CHECKPOINT_DIR FINAL CN=DIR...\n")
        return 2
    initial, metrics, ckdir, final = argv[1:5]
    sites = dict(a.split("=", 1) for a in argv[5:])
    try:
        try:
            with open(metrics) as f:
                lines = [json.loads(s) for s in f if s.strip()]
        except (OSError, ValueError) as e:
            raise CheckError("%s: %s" % (metrics, e))
        if not lines:
            raise CheckError("%s: no rounds" % metrics)
        _, model = read_st(initial)
        worst = 0.0
        for i, line in enumerate(lines):
            r = line.get("round")
            if not isinstance(r, int) or (i and r != lines[i - 1]["round"] + 1):
                raise CheckError("%s: line %d: round %r does not follow the previous one" % (metrics, i + 1, r))
            paths = [os.path.join(ckdir, "round-%06d.safetensors" % r)]
            if i == len(lines) - 1:
                paths.append(final)
            have = [p for p in paths if os.path.exists(p) or p == final]
            if not have:
                raise CheckError("round %d: no model after the round: %s is missing" % (r, paths[0]))
            for p in have:
                meta, new = read_st(p)
                if meta.get("fedtune.round") != str(r):
                    raise CheckError("%s: fedtune.round %s, expected %d" % (p, meta.get("fedtune.round"), r))
                k, w = check_round(r, line, model, new, p, sites)
                worst = max(worst, w)
            print("round %d: %d updates: FedAvg holds" % (r, k))
            model = new
    except CheckError as e:
        print("fedavg_check: %s" % e)
        return 1
    print("fedavg_check: %d rounds verified; largest error %.2f of the tolerance" % (len(lines), worst))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
