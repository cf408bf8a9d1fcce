#!/usr/bin/env python3
"""Makes the long scanned PDFs of bench/long_scan.sh in DIR: blank-N.pdf (N empty A4 pages, no
text layer: every page goes to OCR) and scans-N.pdf (the four one-page scans of tests/data/docs,
repeated to N pages, through poppler's pdfunite)."""
import os
import subprocess
import sys


def blank_pdf(path, pages):
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << >> >>"] * pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    with open(path, "wb") as f:
        f.write(out)


def scans_pdf(path, pages, docs):
    sources = [os.path.join(docs, name) for name in ("scansmpl.pdf", "testOCR.pdf", "Non-text-searchable.pdf", "sv600_g_normal.pdf")]
    subprocess.run(["pdfunite", *[sources[i % len(sources)] for i in range(pages)], path], check=True)


if __name__ == "__main__":
    out, pages = sys.argv[1], int(sys.argv[2])
    docs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "docs")
    os.makedirs(out, exist_ok=True)
    blank_pdf(os.path.join(out, f"blank-{pages}.pdf"), pages)
    scans_pdf(os.path.join(out, f"scans-{pages}.pdf"), pages, docs)
