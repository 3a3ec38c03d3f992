#!/bin/sh
# PyTorch interoperability through safetensors files (see interop_torch.py). Skips with
# exit code 77 (CTest SKIP_RETURN_CODE) when the system Python has no torch.
# Usage: interop_torch.sh <path to st_forward>
PY=/usr/bin/python3
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "SKIP: python3-torch not installed (apt-get install python3-torch)"
    exit 77
fi
# No __pycache__ in the source tree for the shared safetensors_io.py.
PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    exec "$PY" "$(dirname "$0")/interop_torch.py" "$1"
