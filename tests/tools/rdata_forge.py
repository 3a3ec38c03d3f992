"""Writes tiny R lazy-load databases (NAME.rdx + NAME.rdb) and .rds files for
tests/text_data.sh: good ones in serialisation versions 2 and 3, and one malformed
variant per refusal of scripts/rdata-text. Written from R's format as documented in
R Internals ("Serialization Formats") and src/main/serialize.c: XDR big-endian ints,
flags = type | object << 8 | attributes << 9 | tag << 10 | levels << 12.
  rdata_forge.py OUTDIR      writes OUTDIR/<case>.rdx/.rdb (and a few .rds), one a case
"""
import gzip
import os
import struct
import sys
import zlib


def i32(v):
    return struct.pack(">i", v)


def flags(t, attr=False, tag=False, levels=0):
    return i32(t | (attr << 9) | (tag << 10) | (levels << 12))


def charsxp(s, levels=1 << 3):  # UTF8_MASK
    if s is None:
        return flags(9) + i32(-1)
    b = s.encode("utf-8") if isinstance(s, str) else s
    return flags(9, levels=levels) + i32(len(b)) + b


def strsxp(vals, attrs=b""):
    return flags(16, attr=bool(attrs)) + i32(len(vals)) + b"".join(charsxp(v) for v in vals) \
        + attrs


def intsxp(vals, attrs=b""):
    return flags(13, attr=bool(attrs)) + i32(len(vals)) + b"".join(i32(v) for v in vals) + attrs


def lglsxp(vals):
    return flags(10) + i32(len(vals)) + b"".join(i32(v) for v in vals)


def symbol(name, refs):
    """A symbol, or a reference to it when written before (R's ref table)."""
    if name in refs:
        return i32(255 | (refs.index(name) + 1) << 8)
    refs.append(name)
    return flags(1) + charsxp(name, levels=1 << 6)  # ASCII_MASK


def pairlist(items, refs):
    """Tagged pairlist (an attribute list): tag, CAR, then the next cell."""
    out = b""
    for tag, val in items:
        out += flags(2, tag=True) + symbol(tag, refs) + val
    return out + i32(254)


def vecsxp(vals, names, refs):
    attrs = pairlist([("names", strsxp(names))], refs)
    return flags(19, attr=True) + i32(len(vals)) + b"".join(vals) + attrs


def header(version):
    h = b"X\n" + i32(version) + i32(0x040201) + i32(0x020300 if version == 2 else 0x030500)
    if version == 3:
        h += i32(5) + b"UTF-8"
    return h


def blob(ser):
    return struct.pack(">I", len(ser)) + zlib.compress(ser)


def lazyload(out, name, objects, version=3, compressed=None, rdx_body=None, blobs=None):
    """objects: [(var, serialised object without header)]; writes name.rdb and .rdx."""
    rdb, pos = b"", []
    for i, (_, obj) in enumerate(objects):
        b = blobs[i] if blobs and i in blobs else blob(header(version) + obj)
        pos.append((len(rdb), len(b)))
        rdb += b
    refs = []
    variables = vecsxp([intsxp(list(p)) for p in pos], [v for v, _ in objects], refs)
    comp = compressed if compressed is not None else lglsxp([1])
    body = rdx_body if rdx_body is not None else vecsxp(
        [variables, vecsxp([], [], refs), comp], ["variables", "references", "compressed"],
        refs)
    with open(os.path.join(out, name + ".rdb"), "wb") as f:
        f.write(rdb)
    with open(os.path.join(out, name + ".rdx"), "wb") as f:
        f.write(gzip.compress(header(version) + body, mtime=0))


def main(out):
    os.makedirs(out, exist_ok=True)
    books = [("emma", strsxp(["EMMA", "", "Emma Woodhouse, handsome, clever, and rich,"])),
             ("persuasion", strsxp(["Persuasion", "£10 000 — “Sir Walter”"]))]
    lazyload(out, "good3", books)
    lazyload(out, "good2", books, version=2)
    # A character vector with attributes (names), one element long.
    refs = []
    named = strsxp(["x"], attrs=pairlist([("names", strsxp(["a"]))], refs))
    lazyload(out, "attrs", [("one", named)])
    lazyload(out, "na", [("emma", strsxp(["a", None]))])
    lazyload(out, "notchar", [("emma", intsxp([1, 2]))])
    lazyload(out, "newline", [("emma", strsxp(["a\nb"]))])
    lazyload(out, "closure", [("emma", flags(3) + i32(254))])
    lazyload(out, "version4", books, version=4)
    good = header(3) + books[0][1]
    lazyload(out, "trailing", books[:1], blobs={0: blob(good + b"\0\0\0\0")})
    lazyload(out, "truncated", books[:1], blobs={0: blob(good[:-5])})
    lazyload(out, "badzlib", books[:1], blobs={0: struct.pack(">I", len(good)) + b"\x78\x9cgarbage"})
    lazyload(out, "badlength", books[:1],
             blobs={0: struct.pack(">I", len(good) + 7) + zlib.compress(good)})
    lazyload(out, "hugelength", [("emma", flags(16) + i32(0x7FFFFFF0))])
    lazyload(out, "badutf8", [("emma", strsxp([b"caf\xe9"]))])
    lazyload(out, "badref", [("emma", strsxp(["a"], attrs=i32(2 | 1 << 10 | 0) + i32(255 | 9 << 8)
                                                + strsxp(["b"]) + i32(254)))])
    lazyload(out, "bzip2", books[:1], compressed=intsxp([2]))
    # Lists in lists, deeper than the reader's limit of 200; and attributes in attributes.
    lazyload(out, "deep", [("emma", (flags(19) + i32(1)) * 300 + strsxp(["x"]))])
    nested = strsxp(["x"])
    for _ in range(300):
        nested = strsxp(["x"], attrs=pairlist([("names", nested)], []))
    lazyload(out, "deepattrs", [("emma", nested)])
    lazyload(out, "noindex", books[:1], rdx_body=strsxp(["variables"]))
    # The .rdb shorter than the .rdx says: drop its last bytes after writing.
    lazyload(out, "outside", books)
    with open(os.path.join(out, "outside.rdb"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(out, "outside.rdb")) - 3)
    with open(os.path.join(out, "xdr-not.rds"), "wb") as f:
        f.write(b"A\n" + header(3)[2:] + books[0][1])
    with open(os.path.join(out, "badgzip.rds"), "wb") as f:
        f.write(gzip.compress(header(3) + books[0][1], mtime=0)[:-12])


if __name__ == "__main__":
    main(sys.argv[1])
