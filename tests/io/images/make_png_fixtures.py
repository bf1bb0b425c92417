#!/usr/bin/env python3
"""Writes the PNG fixtures of tests/io/png_decoder_test.cpp into tests/io/images/png/.

A maintainer tool, not run by the tests: the fixtures are committed. It is a PNG encoder of its
own (Python's zlib and nothing else), independent of libpng (which the library reads with) and of stb_image,
which the tests use as the reference decoder. It covers what Pillow cannot write:

- every colour type at every bit depth the spec allows (0: 1/2/4/8/16, 2: 8/16, 3: 1/2/4/8,
  4: 8/16, 6: 8/16), plain and Adam7-interlaced;
- every filter type 0..4: the filter of a row is chosen by its index, so each pass of each image
  uses all five (and the first row of a pass, whose prior row is zeros, gets each filter in turn
  across files);
- odd sizes (37x23, 13x7, 1x9, 5x1, 1x1) so that Adam7 passes can be empty and rows end in a
  partial byte; the unused bits of a partial byte are set to ones, which decoders must ignore;
- tRNS: grey and RGB colour keys (16-bit keys whose high byte matches other pixels, so that the
  key is compared at full depth), palette alpha shorter than the palette and as long as it;
- a zlib stream split over many IDAT chunks, one of them empty; stored and maximally compressed
  streams; ancillary chunks (tEXt, gAMA, pHYs, an unknown one, one with a wrong CRC, a suggested
  PLTE in an RGB image) before and after the image data.

Run: python3 tests/io/images/make_png_fixtures.py  (deterministic: same bytes every run).
"""

import os
import random
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "png")

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(tag, data, bad_crc=False):
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    if bad_crc:
        crc ^= 0x5A5A5A5A
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_row(kind, row, prior, unit):
    out = bytearray(len(row))
    for i, x in enumerate(row):
        a = row[i - unit] if i >= unit else 0
        b = prior[i]
        c = prior[i - unit] if i >= unit else 0
        if kind == 0:
            pred = 0
        elif kind == 1:
            pred = a
        elif kind == 2:
            pred = b
        elif kind == 3:
            pred = (a + b) // 2
        else:
            pred = paeth(a, b, c)
        out[i] = (x - pred) & 0xFF
    return bytes([kind]) + bytes(out)


def pack_row(samples, depth):
    """Samples of one row at `depth` bits, big-endian; unused bits of a last byte set to ones."""
    if depth == 8:
        return bytes(samples)
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    bits = "".join(format(s, "0{}b".format(depth)) for s in samples)
    bits += "1" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def scanlines(pixels, width, height, colour_type, depth, interlaced, filter_offset):
    """The filtered scanline stream: pixels[y][x] is a tuple of samples."""
    spp = SAMPLES[colour_type]
    unit = max(1, spp * depth // 8)
    passes = ADAM7 if interlaced else [(0, 0, 1, 1)]
    stream = bytearray()
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, width, dx))
        ys = list(range(y0, height, dy))
        if not xs or not ys:
            continue  # an empty pass has no rows, not even filter bytes
        prior = None
        for j, y in enumerate(ys):
            row = pack_row([s for x in xs for s in pixels[y][x]], depth)
            if prior is None:
                prior = bytes(len(row))
            stream += filter_row((j + filter_offset) % 5, row, prior, unit)
            prior = row
    return bytes(stream)


def make_pixels(width, height, colour_type, depth, rng, palette_entries=0):
    """Gradients with noise (so that every filter has work to do), in range for the depth."""
    spp = SAMPLES[colour_type]
    top = (1 << depth) - 1
    pixels = []
    for y in range(height):
        row = []
        for x in range(width):
            if colour_type == 3:
                row.append(((x * 3 + y * 5 + rng.randrange(3)) % palette_entries,))
                continue
            px = []
            for s in range(spp):
                base = (x * (7 + 2 * s) + y * (3 + s)) * (top // 40 + 1)
                px.append((base + rng.randrange(top // 8 + 2)) % (top + 1))
            row.append(tuple(px))
        pixels.append(row)
    return pixels


def png(width, height, colour_type, depth, interlaced, pixels, *, before_idat=(), after_idat=(),
        idat_pieces=1, level=6, filter_offset=0):
    raw = scanlines(pixels, width, height, colour_type, depth, interlaced, filter_offset)
    data = zlib.compress(raw, level)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 1 if interlaced else 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for c in before_idat:
        out += c
    if idat_pieces == 1:
        out += chunk(b"IDAT", data)
    else:
        # Uneven pieces, one of them empty: decoders must concatenate them.
        step = max(1, len(data) // idat_pieces)
        pieces = [data[i:i + step] for i in range(0, len(data), step)]
        pieces.insert(1, b"")
        for piece in pieces:
            out += chunk(b"IDAT", piece)
    for c in after_idat:
        out += c
    return out + chunk(b"IEND", b"")


def palette_chunks(entries, rng, alpha_entries=None):
    plte = bytes(rng.randrange(256) for _ in range(3 * entries))
    chunks = [chunk(b"PLTE", plte)]
    if alpha_entries is not None:
        chunks.append(chunk(b"tRNS", bytes(rng.randrange(256) for _ in range(alpha_entries))))
    return chunks


def write(name, data, written):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    written.append((name, len(data)))


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".png"):
            os.remove(os.path.join(OUT, old))
    rng = random.Random(20240611)
    written = []
    depths = {0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]}
    offset = 0
    # Every colour type at every legal depth, plain and interlaced.
    for colour_type, ds in depths.items():
        for depth in ds:
            for interlaced in (False, True):
                width, height = (37, 23) if interlaced else (13, 7)
                before = []
                entries = 0
                if colour_type == 3:
                    # Fewer entries than the depth allows (except at 1 bit), so that the indices
                    # in use are exactly the palette's.
                    entries = {1: 2, 2: 3, 4: 11, 8: 200}[depth]
                    before = palette_chunks(entries, rng)
                pixels = make_pixels(width, height, colour_type, depth, rng, entries)
                name = "ct{}_d{}_{}.png".format(colour_type, depth, "adam7" if interlaced else "plain")
                write(name, png(width, height, colour_type, depth, interlaced, pixels,
                                before_idat=before, filter_offset=offset, level=offset % 10),
                      written)
                offset += 1

    # Colour keys: grey at every depth, RGB at 8 and 16 bits, plain and interlaced. The key is a
    # colour that occurs; for 16 bits, other pixels share its high byte but not its low byte.
    for colour_type, ds in ((0, [1, 2, 4, 8, 16]), (2, [8, 16])):
        for depth in ds:
            for interlaced in (False, True):
                width, height = (37, 23) if interlaced else (13, 7)
                pixels = make_pixels(width, height, colour_type, depth, rng)
                key = pixels[height // 2][width // 2]
                for y in range(0, height, 3):
                    pixels[y][(y * 5) % width] = key
                    if depth == 16:
                        near = tuple((k & 0xFF00) | ((k + 1) & 0xFF) for k in key)
                        pixels[y][(y * 5 + 1) % width] = near
                trns = chunk(b"tRNS", b"".join(struct.pack(">H", k) for k in key))
                name = "ct{}_d{}_key_{}.png".format(colour_type, depth,
                                                    "adam7" if interlaced else "plain")
                write(name, png(width, height, colour_type, depth, interlaced, pixels,
                                before_idat=[trns], filter_offset=offset), written)
                offset += 1

    # Palette alpha: shorter than the palette (later entries opaque) and as long as it.
    for depth, entries, alpha_entries, interlaced in ((8, 40, 17, False), (4, 16, 16, True),
                                                       (2, 4, 1, False), (1, 2, 2, True)):
        width, height = (37, 23) if interlaced else (13, 7)
        chunks = palette_chunks(entries, rng, alpha_entries)
        pixels = make_pixels(width, height, 3, depth, rng, entries)
        name = "ct3_d{}_trns{}of{}_{}.png".format(depth, alpha_entries, entries,
                                                 "adam7" if interlaced else "plain")
        write(name, png(width, height, 3, depth, interlaced, pixels, before_idat=chunks,
                        filter_offset=offset), written)
        offset += 1

    # Tiny and thin images: Adam7 passes that are empty, rows of one partial byte.
    for width, height, colour_type, depth in ((1, 1, 6, 8), (1, 9, 0, 1), (5, 1, 2, 16),
                                              (2, 2, 4, 8), (9, 1, 0, 2)):
        for interlaced in (False, True):
            pixels = make_pixels(width, height, colour_type, depth, rng)
            name = "tiny_{}x{}_ct{}_d{}_{}.png".format(width, height, colour_type, depth,
                                                       "adam7" if interlaced else "plain")
            write(name, png(width, height, colour_type, depth, interlaced, pixels,
                            filter_offset=offset), written)
            offset += 1

    # Many IDAT chunks (one empty), stored and best compression.
    for colour_type, depth, interlaced, level in ((2, 8, False, 0), (6, 16, True, 9),
                                                  (0, 4, True, 1)):
        width, height = 37, 23
        pixels = make_pixels(width, height, colour_type, depth, rng)
        name = "multi_idat_ct{}_d{}_{}.png".format(colour_type, depth,
                                                   "adam7" if interlaced else "plain")
        write(name, png(width, height, colour_type, depth, interlaced, pixels, idat_pieces=37,
                        level=level, filter_offset=offset), written)
        offset += 1

    # Ancillary chunks before and after the image data, one of them with a wrong CRC (to be
    # skipped), an unknown one, and a suggested palette in an RGB image.
    pixels = make_pixels(37, 23, 2, 8, rng)
    before = [chunk(b"gAMA", struct.pack(">I", 45455)),
              chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
              chunk(b"tEXt", b"Comment\x00made by make_png_fixtures.py"),
              chunk(b"PLTE", bytes(range(48))),
              chunk(b"zzZz", b"an unknown ancillary chunk", bad_crc=True)]
    after = [chunk(b"tEXt", b"Author\x00nobody"), chunk(b"tIME", bytes(7))]
    write("ancillary_ct2_d8_plain.png", png(37, 23, 2, 8, False, pixels, before_idat=before,
                                            after_idat=after, filter_offset=offset), written)
    # A tRNS with a wrong CRC: skipped, so the image has no alpha.
    pixels = make_pixels(13, 7, 0, 8, rng)
    bad_trns = chunk(b"tRNS", struct.pack(">H", pixels[0][0][0]), bad_crc=True)
    write("bad_crc_trns_ct0_d8_plain.png",
          png(13, 7, 0, 8, False, pixels, before_idat=[bad_trns], filter_offset=offset + 1),
          written)

    total = sum(size for _, size in written)
    print("wrote {} fixtures, {} bytes, into {}".format(len(written), total, OUT))


if __name__ == "__main__":
    main()
