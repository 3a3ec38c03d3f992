#!/bin/sh
# fedtune's transformer layers against PyTorch autograd (see interop_torch_transformer.py):
# outputs and every gradient on the same weights and padded batches. Skips with exit code
# 77 (CTest SKIP_RETURN_CODE; scripts/test fails it under CI=true) when the system Python
# has no torch.
# Usage: interop_torch_transformer.sh <path to st_grad>
PY=/usr/bin/python3
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "SKIP: python3-torch not installed (apt-get install python3-torch)"
    exit 77
fi
# No __pycache__ in the source tree for the shared safetensors_io.py.
PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    exec "$PY" "$(dirname "$0")/interop_torch_transformer.py" "$1"
