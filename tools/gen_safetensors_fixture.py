#!/usr/bin/python3
"""Writes tests/fixtures/torch_small.safetensors from PyTorch tensors.

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_safetensors_fixture.py [--out FILE]

Debian has no python3-safetensors package, so the file is written here
directly from the format specification: an 8-byte little-endian header
length N, N bytes of JSON, then the data buffer. The layout follows what
the `safetensors` package produces for `safetensors.torch.save_file`:

  * "__metadata__" ({"format": "pt"}) comes first in the header;
  * tensors are laid out in the data buffer by decreasing element size,
    then by name, back to back with no gaps;
  * the JSON is compact (no spaces) with non-ASCII characters written as
    \\u escapes, and padded with spaces to a multiple of 8 bytes;
  * the data are each tensor's bytes, C-contiguous, little-endian.

The tensors mimic a small state_dict: float32 weights and bias, a float64
0-d scalar, a 4-d int32 tensor, a float32 tensor with a zero dimension, and
two dtypes the engine lacks (float16, int64 as in BatchNorm's
num_batches_tracked), which a loader must skip when not asked for. One name
uses JSON escapes. The values come from torch's seeded generator.

The script prints the expected values as C initializers (exact hex floats)
for tests/test_checkpoint.c; rerunning it gives the same bytes.
"""
import argparse
import json
import struct
import sys

import torch

ELEM = {torch.float32: ("F32", 4), torch.float64: ("F64", 8), torch.int32: ("I32", 4),
        torch.float16: ("F16", 2), torch.int64: ("I64", 8)}


def tensors():
    g = torch.Generator().manual_seed(1234)
    return {
        "linear.weight": torch.randn(3, 4, generator=g, dtype=torch.float32),
        "linear.bias": torch.randn(3, generator=g, dtype=torch.float32),
        "scale": torch.tensor(float(torch.rand(1, generator=g, dtype=torch.float64)) * 10,
                              dtype=torch.float64),
        "counts": torch.randint(-1000, 1000, (2, 1, 2, 2), generator=g, dtype=torch.int32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "norm.running_var": torch.rand(4, generator=g).to(torch.float16),
        "norm.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "odd \"name\"\\\u00e9\u2603": torch.tensor([1.5, -2.25], dtype=torch.float64),
    }


def to_bytes(t):
    # numpy gives the native byte order; make it little-endian explicitly
    a = t.contiguous().numpy()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def build(ts, metadata):
    order = sorted(ts, key=lambda k: (-ELEM[ts[k].dtype][1], k))
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name in order:
        t = ts[name]
        b = to_bytes(t)
        header[name] = {"dtype": ELEM[t.dtype][0], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    js = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js + b"".join(blobs)


def c_values(name, t):
    flat = t.reshape(-1).tolist()
    if t.dtype == torch.float32:
        vals = ", ".join(float(v).hex() + "f" for v in flat)
        return f"static const float {name}[] = {{{vals}}};"
    if t.dtype == torch.float64:
        vals = ", ".join(float(v).hex() for v in flat)
        return f"static const double {name}[] = {{{vals}}};"
    vals = ", ".join(str(int(v)) for v in flat)
    return f"static const int32_t {name}[] = {{{vals}}};"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/torch_small.safetensors")
    args = ap.parse_args()
    ts = tensors()
    data = build(ts, {"format": "pt"})
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"/* {args.out}: {len(data)} bytes, torch {torch.__version__} */")
    for c_name, key in [("fx_weight", "linear.weight"), ("fx_bias", "linear.bias"),
                        ("fx_scale", "scale"), ("fx_counts", "counts"),
                        ("fx_odd", "odd \"name\"\\\u00e9\u2603")]:
        print(c_values(c_name, ts[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
