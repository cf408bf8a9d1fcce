#!/usr/bin/env python3
"""Which converter reads legacy Office files: antiword / catdoc (xls2csv, catppt) against
LibreOffice headless, on the fixtures in tests/data/docs.

  bench/legacy_office.py [--mutants N]

For each file and converter: seconds per file (median of 3), characters out, and fidelity as the
share of the reference's characters found in order in the output (character-level LCS recall,
whitespace ignored). The reference is the source text where it is known (flores-zho.doc is
FLORES zho lines 1-5) and LibreOffice's text otherwise. Then --mutants byte-mutated copies of each
file through every converter with a 30 s deadline: crashes (killed by a signal), hangs (past the
deadline) and clean refusals (non-zero exit).
"""

import argparse
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DOCS = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "docs"
FLORES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "mt" / "flores200-devtest-1-100.zho_Hans"

NATIVE = {
    ".doc": [["antiword", "-m", "UTF-8.txt", "-w", "0"], ["catdoc", "-d", "utf-8", "-w"]],
    ".xls": [["xls2csv", "-q3", "-d", "utf-8"]],
    ".ppt": [["catppt", "-d", "utf-8"]],
}
FILES = ["testWORD.doc", "flores-zho.doc", "testEXCEL.xls", "testPPT.ppt"]


def run(cmd, path, timeout=30):
    started = time.monotonic()
    try:
        p = subprocess.run(cmd + [str(path)], capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), time.monotonic() - started
    except subprocess.TimeoutExpired:
        return "timeout", "", time.monotonic() - started


def libreoffice(path, timeout=60):
    """LibreOffice headless to text (csv for spreadsheets), in a private profile."""
    with tempfile.TemporaryDirectory() as tmp:
        target = "csv" if path.suffix == ".xls" else "txt:Text (encoded):UTF8"
        if path.suffix == ".ppt":
            # Impress has no text export: through PDF, then pdftotext.
            target = "pdf"
        cmd = ["soffice", f"-env:UserInstallation=file://{tmp}/profile", "--headless", "--convert-to", target, "--outdir", tmp, str(path)]
        started = time.monotonic()
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", "", time.monotonic() - started
        out = list(pathlib.Path(tmp).glob(path.stem + ".*"))
        text = ""
        if out:
            if out[0].suffix == ".pdf":
                text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(out[0]), "-"], capture_output=True).stdout.decode("utf-8", "replace")
            else:
                text = out[0].read_text("utf-8", "replace")
        return p.returncode if out else (p.returncode or "no output"), text, time.monotonic() - started


def recall(reference, text):
    a = [c for c in reference if not c.isspace() and c not in "\",;"]
    b = [c for c in text if not c.isspace() and c not in "\",;"]
    if not a:
        return float("nan")
    # LCS by rows, O(len(a) * len(b)); fixtures are small.
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1] / len(a)


def mutate(data, rng):
    b = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    if rng.random() < 0.3:
        b = b[: rng.randrange(1, len(b))]
    return bytes(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mutants", type=int, default=20)
    args = ap.parse_args()
    if not shutil.which("soffice"):
        print("soffice not installed: apt-get install libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui", file=sys.stderr)
        return 1
    print("| file | converter | s per file | chars | fidelity |")
    print("|---|---|---|---|---|")
    for name in FILES:
        path = DOCS / name
        lo_runs = [libreoffice(path) for _ in range(3)]
        lo_text = lo_runs[0][1]
        reference = "\n".join(FLORES.read_text().splitlines()[:5]) if name == "flores-zho.doc" else lo_text
        rows = [("LibreOffice headless", statistics.median(r[2] for r in lo_runs), lo_text)]
        for cmd in NATIVE[path.suffix]:
            runs = [run(cmd, path) for _ in range(3)]
            rows.append((cmd[0], statistics.median(r[2] for r in runs), runs[0][1]))
        for converter, secs, text in rows:
            print(f"| {name} | {converter} | {secs:.3f} | {len(text)} | {recall(reference, text):.3f} |")

    rng = random.Random(14)
    print()
    print(f"| converter | mutants | clean exit | refused (non-zero) | crashed (signal) | hung (>30 s) |")
    print("|---|---|---|---|---|---|")
    tally = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            data = (DOCS / name).read_bytes()
            for i in range(args.mutants):
                m = pathlib.Path(tmp) / f"{i}-{name}"
                m.write_bytes(mutate(data, rng))
                converters = [(c[0], lambda p, c=c: run(c, p)) for c in NATIVE[m.suffix]] + [("LibreOffice headless", libreoffice)]
                for label, fn in converters:
                    code, _, _ = fn(m)
                    t = tally.setdefault(label, [0, 0, 0, 0, 0])
                    t[0] += 1
                    if code == "timeout":
                        t[4] += 1
                    elif isinstance(code, int) and code < 0:
                        t[3] += 1
                    elif code == 0:
                        t[1] += 1
                    else:
                        t[2] += 1
    for label, (n, clean, refused, crashed, hung) in tally.items():
        print(f"| {label} | {n} | {clean} | {refused} | {crashed} | {hung} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
