"""A minimal safetensors writer and reader for the PyTorch interop tests
(interop_torch.py, interop_torch_transformer.py). There is no safetensors package in
Debian, hence these few lines of struct + json (numpy, which Debian's torch depends on,
turns the bytes around).
"""
import json
import struct

import numpy as np
import torch

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def tensor_bytes(t, dtype):
    """Little-endian bytes of t converted to dtype, whatever the host order."""
    flat = t.detach().contiguous().reshape(-1)
    if dtype == "F32":
        return flat.float().numpy().astype("<f4").tobytes()
    torch_dtype = torch.float16 if dtype == "F16" else torch.bfloat16
    bits = flat.to(torch_dtype).view(torch.int16).tolist()
    return struct.pack("<%dh" % len(bits), *bits)


def write_safetensors(path, tensors, metadata=None, dtype="F32"):
    """tensors: list of (name, torch tensor), written in that order."""
    header, blobs, at = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors:
        b = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    """Returns (dict name -> float32 tensor, metadata, header length), checking the layout
    rules of the reference implementation."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n].decode())
    data = buf[8 + n :]
    metadata = header.pop("__metadata__", {})
    out, at = {}, 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        b, end = e["data_offsets"]
        assert b == at, "hole or overlap at " + name
        numel = 1
        for d in e["shape"]:
            numel *= d
        assert end - b == numel * DTYPE_SIZE[e["dtype"]], "size of " + name
        assert e["dtype"] == "F32", "fedtune writes F32"
        vals = np.frombuffer(data, dtype="<f4", count=numel, offset=b).astype(np.float32)
        out[name] = torch.from_numpy(vals).reshape(e["shape"])
        at = end
    assert at == len(data), "trailing bytes"
    return out, metadata, n
