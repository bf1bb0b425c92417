#!/usr/bin/env python3
"""Writes the JPEG fixtures of tests/io/jpeg_decoder_test.cpp into tests/io/images/jpeg/.

A maintainer tool, not run by the tests (the fixtures are committed). It needs Pillow:
    python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow
    /tmp/pil/bin/python tests/io/images/make_jpeg_fixtures.py

Most fixtures come from Pillow (libjpeg). The sampling factors, colour spaces and markers libjpeg
will not write through Pillow (luma 1x2, 4x1 and 3x1, 3:2 ratios, Adobe RGB, YCCK) come from the
small baseline encoder below, which borrows the standard Huffman tables from a Pillow file.
Sizes are odd so that MCUs are partial at the right and bottom edges.
"""
import io
import math
import os
import random
import struct

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jpeg")


def source_rgb(width, height, seed):
    """A deterministic test picture: gradients, a sharp-edged disc and a little noise."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    pixels = []
    for y in range(height):
        for x in range(width):
            r = int(255 * x / max(1, width - 1))
            g = int(255 * y / max(1, height - 1))
            b = int(128 + 100 * math.sin((x + 2 * y) / 5.0))
            if (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2:
                r, g, b = 255 - r, 40, 255 - b
            n = rng.randint(-12, 12)
            pixels.append(tuple(max(0, min(255, c + n)) for c in (r, g, b)))
    image.putdata(pixels)
    return image


def pillow(name, image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    write(name, buffer.getvalue())
    return buffer.getvalue()


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


# --- a small baseline encoder for what Pillow cannot be asked to write ---

ZIGZAG = []
for s in range(15):
    low, high = max(0, s - 7), min(s, 7)
    rows = range(high, low - 1, -1) if s % 2 == 0 else range(low, high + 1)
    for row in rows:
        ZIGZAG.append(row * 8 + (s - row))


def segments(data):
    """(marker, payload) for each marker segment before the first SOS."""
    at = 2
    while at < len(data):
        assert data[at] == 0xFF
        marker = data[at + 1]
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        yield marker, data[at + 4:at + 2 + length]
        if marker == 0xDA:
            return
        at += 2 + length


def standard_tables():
    """The Annex K Huffman tables and libjpeg's quality-90 quantisation tables, from Pillow."""
    buffer = io.BytesIO()
    source_rgb(16, 16, 0).save(buffer, "JPEG", quality=90, subsampling=0)
    huffman, quant = {}, {}
    for marker, payload in segments(buffer.getvalue()):
        at = 0
        if marker == 0xC4:
            while at < len(payload):
                tc, th = payload[at] >> 4, payload[at] & 15
                counts = list(payload[at + 1:at + 17])
                values = list(payload[at + 17:at + 17 + sum(counts)])
                huffman[(tc, th)] = (counts, values)
                at += 17 + sum(counts)
        elif marker == 0xDB:
            while at < len(payload):
                tq = payload[at] & 15
                table = [0] * 64
                for k in range(64):
                    table[ZIGZAG[k]] = payload[at + 1 + k]
                quant[tq] = table
                at += 65
    return huffman, quant


def canonical_codes(counts, values):
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            codes[values[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


class BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, length):
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def flush(self):
        while self.n:
            self.put(1, 1)


COS = [[math.cos((2 * x + 1) * u * math.pi / 16) for x in range(8)] for u in range(8)]


def fdct_quantise(block, q):
    """8x8 samples (row-major) -> quantised coefficients in natural order."""
    rows = [[sum((block[y * 8 + x] - 128) * COS[u][x] for x in range(8)) for u in range(8)]
            for y in range(8)]
    out = [0] * 64
    for v in range(8):
        for u in range(8):
            cu = 1 / math.sqrt(2) if u == 0 else 1.0
            cv = 1 / math.sqrt(2) if v == 0 else 1.0
            value = 0.25 * cu * cv * sum(rows[y][u] * COS[v][y] for y in range(8))
            out[v * 8 + u] = int(round(value / q[v * 8 + u]))
    return out


def magnitude(value):
    size = abs(value).bit_length()
    bits = value if value >= 0 else value + (1 << size) - 1
    return size, bits


def encode(planes, width, height, sampling, ids, quant_of, tables_of, quant, restart=0,
           app=None, sof=0xC0, sixteen_bit=False):
    """Baseline (or SOF1) JPEG of full-resolution `planes`, subsampled per `sampling`."""
    huffman, _ = standard_tables()
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    mcus_w = -(-width // (8 * h_max))
    mcus_h = -(-height // (8 * v_max))
    comps = []
    for plane, (h, v) in zip(planes, sampling):
        cw, ch = -(-width * h // h_max), -(-height * v // v_max)
        bw, bh = mcus_w * h, mcus_h * v
        # Box average over the source pixels each sample covers (nearest for fractions).
        samples = []
        for y in range(bh * 8):
            yy = min(y, ch - 1)
            for x in range(bw * 8):
                xx = min(x, cw - 1)
                x0, x1 = xx * h_max // h, max(xx * h_max // h + 1, (xx + 1) * h_max // h)
                y0, y1 = yy * v_max // v, max(yy * v_max // v + 1, (yy + 1) * v_max // v)
                cells = [plane[min(sy, height - 1)][min(sx, width - 1)]
                         for sy in range(y0, y1) for sx in range(x0, x1)]
                samples.append(int(round(sum(cells) / len(cells))))
        comps.append((samples, bw * 8))
    out = bytearray(b"\xff\xd8")

    def segment(marker, payload):
        out.extend(bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload)

    if app == "jfif":
        segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    elif app in ("adobe0", "adobe1", "adobe2"):
        segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00" + bytes([int(app[-1])]))
    for index in sorted(set(quant_of)):
        table = quant[index]
        if sixteen_bit:
            segment(0xDB, bytes([0x10 | index]) +
                    b"".join(struct.pack(">H", table[ZIGZAG[k]]) for k in range(64)))
        else:
            segment(0xDB, bytes([index]) + bytes(table[ZIGZAG[k]] for k in range(64)))
    for (tc, th), (counts, values) in sorted(huffman.items()):
        segment(0xC4, bytes([tc << 4 | th] + counts + values))
    frame = struct.pack(">BHHB", 8, height, width, len(planes))
    for cid, (h, v), tq in zip(ids, sampling, quant_of):
        frame += bytes([cid, h << 4 | v, tq])
    segment(sof, frame)
    if restart:
        segment(0xDD, struct.pack(">H", restart))
    scan = bytes([len(planes)])
    for cid, t in zip(ids, tables_of):
        scan += bytes([cid, t << 4 | t])
    segment(0xDA, scan + b"\x00\x3f\x00")
    codes = {t: (canonical_codes(*huffman[(0, t)]), canonical_codes(*huffman[(1, t)]))
             for t in set(tables_of)}
    writer = BitWriter()
    preds = [0] * len(planes)
    interleaved = len(planes) > 1
    mcu = 0
    for my in range(mcus_h):
        for mx in range(mcus_w):
            if restart and mcu and mcu % restart == 0:
                writer.flush()
                writer.out.extend(bytes([0xFF, 0xD0 + (mcu // restart - 1) % 8]))
                preds = [0] * len(planes)
            mcu += 1
            for c, ((samples, stride), (h, v)) in enumerate(zip(comps, sampling)):
                blocks = [(mx * h + bx, my * v + by) for by in range(v) for bx in range(h)]
                assert interleaved, "single-component fixtures come from Pillow"
                dc_codes, ac_codes = codes[tables_of[c]]
                for bx, by in blocks:
                    block = [samples[(by * 8 + y) * stride + bx * 8 + x]
                             for y in range(8) for x in range(8)]
                    coef = fdct_quantise(block, quant[quant_of[c]])
                    diff = coef[0] - preds[c]
                    preds[c] = coef[0]
                    size, bits = magnitude(diff)
                    writer.put(*dc_codes[size])
                    writer.put(bits, size)
                    run = 0
                    for k in range(1, 64):
                        value = coef[ZIGZAG[k]]
                        if value == 0:
                            run += 1
                            continue
                        while run > 15:
                            writer.put(*ac_codes[0xF0])
                            run -= 16
                        size, bits = magnitude(value)
                        writer.put(*ac_codes[(run << 4) | size])
                        writer.put(bits, size)
                        run = 0
                    if run:
                        writer.put(*ac_codes[0x00])
    writer.flush()
    out.extend(writer.out)
    out.extend(b"\xff\xd9")
    return bytes(out)


def ycbcr_planes(image):
    width, height = image.size
    data = image.convert("YCbCr").tobytes()
    return [[[data[(y * width + x) * 3 + c] for x in range(width)] for y in range(height)]
            for c in range(3)]


def main():
    os.makedirs(OUT, exist_ok=True)
    small = source_rgb(37, 23, 1)
    large = source_rgb(61, 45, 2)
    pillow("baseline_444_37x23.jpg", small, quality=90, subsampling=0)
    pillow("baseline_422_61x45.jpg", large, quality=90, subsampling=1)
    pillow("baseline_420_61x45.jpg", large, quality=85, subsampling=2)
    pillow("grey_37x23.jpg", small.convert("L"), quality=90)
    pillow("progressive_420_61x45.jpg", large, quality=90, subsampling=2, progressive=True)
    pillow("progressive_444_37x23.jpg", small, quality=95, subsampling=0, progressive=True)
    pillow("progressive_grey_61x45.jpg", large.convert("L"), quality=90, progressive=True)
    pillow("optimized_420_61x45.jpg", large, quality=75, subsampling=2, optimize=True)
    pillow("restart_420_61x45.jpg", large, quality=90, subsampling=2, restart_marker_blocks=1)
    pillow("restart_progressive_61x45.jpg", large, quality=90, subsampling=2, progressive=True,
           restart_marker_blocks=2)
    pillow("cmyk_37x23.jpg", small.convert("CMYK"), quality=90)
    # Quantisation values above 255 need 16-bit tables, which libjpeg writes as SOF1.
    coarse = [min(400, 2 + 6 * (k // 8 + k % 8)) for k in range(64)]
    pillow("sof1_16bit_quant_61x45.jpg", large, qtables=[coarse, [300] * 64], subsampling=2)

    _, quant = standard_tables()
    width, height = large.size
    planes = ycbcr_planes(large)
    rgb = large.tobytes()
    rgb_planes = [[[rgb[(y * width + x) * 3 + c] for x in range(width)] for y in range(height)]
                  for c in range(3)]
    ids = [1, 2, 3]
    tables = [0, 1, 1]
    quant_of = [0, 1, 1]

    def custom(name, sampling, **options):
        write(name, encode(options.pop("planes", planes), width, height, sampling,
                           options.pop("ids", ids), options.pop("quant_of", quant_of),
                           options.pop("tables", tables), quant, **options))

    custom("sampling_h1v2_61x45.jpg", [(1, 2), (1, 1), (1, 1)], app="jfif")
    custom("sampling_h4v1_61x45.jpg", [(4, 1), (1, 1), (2, 1)], app="jfif", restart=3)
    custom("sampling_h3v1_61x45.jpg", [(3, 1), (1, 1), (1, 1)])
    custom("sampling_h2v2_chroma_61x45.jpg", [(1, 1), (2, 2), (1, 1)], app="jfif")
    # Luma 3x2 against chroma 2x1: ratios 3:2, which libjpeg and stb_image cannot decode.
    custom("sampling_h3v2_ratio_61x45.jpg", [(3, 2), (2, 1), (2, 1)])
    custom("adobe_rgb_61x45.jpg", [(1, 1), (1, 1), (1, 1)], planes=rgb_planes, app="adobe0",
           tables=[0, 0, 0], quant_of=[0, 0, 0])
    custom("rgb_ids_61x45.jpg", [(1, 1), (1, 1), (1, 1)], planes=rgb_planes,
           ids=[ord("R"), ord("G"), ord("B")], tables=[0, 0, 0], quant_of=[0, 0, 0])
    # YCCK: Y, Cb, Cr of the inverted RGB, and K; Adobe transform 2.
    k_plane = [[(x * 7 + y * 3) % 256 for x in range(width)] for y in range(height)]
    inverted = Image.eval(large, lambda value: 255 - value)
    custom("ycck_61x45.jpg", [(2, 2), (1, 1), (1, 1), (2, 2)],
           planes=ycbcr_planes(inverted) + [k_plane], app="adobe2", ids=[1, 2, 3, 4],
           tables=[0, 1, 1, 0], quant_of=[0, 1, 1, 0])
    write("sof1_custom_61x45.jpg", encode(planes, width, height, [(2, 1), (1, 1), (1, 1)], ids,
                                          quant_of, tables, quant, sof=0xC1, sixteen_bit=True,
                                          app="jfif"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} fixtures, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
