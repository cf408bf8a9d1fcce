#!/usr/bin/env python3
"""Joins the Marian anchor's results (PyTorch, CTranslate2) with candle's RESULT lines into one
markdown table of tokens/s, ratios against each reference, and peak RSS."""
import json
import sys

anchor = json.load(open(sys.argv[1]))["results"]
ours = [json.loads(l[len("RESULT "):]) for l in open(sys.argv[2]) if l.startswith("RESULT ")]
cells = [(1, 1), (1, 16), (4, 1), (4, 16)]
names = {(1, 1): "greedy b1", (1, 16): "greedy b16", (4, 1): "beam4 b1", (4, 16): "beam4 b16"}
rows = {}
for r in anchor + ours:
    if "tok_per_s" in r:
        rows.setdefault(r["backend"], {})[(r["beam"], r["batch"])] = r
order = ["candle-fp32", "pt-fp32", "ct2-fp32", "ct2-int8"]
print("| backend | " + " | ".join(names[c] for c in cells) + " | peak RSS MiB |")
print("|---|" + "---|" * (len(cells) + 1))
for b in order:
    if b not in rows:
        continue
    vals = [rows[b].get(c, {}).get("tok_per_s") for c in cells]
    rss = [rows[b][c]["peak_rss_mib"] for c in cells if c in rows[b]]
    print(f"| {b} | " + " | ".join(f"{v:.0f}" if v else "-" for v in vals) + f" | {min(rss):.0f}-{max(rss):.0f} |")
for ref in order[1:]:
    if ref in rows and "candle-fp32" in rows:
        ratios = [f'{rows["candle-fp32"][c]["tok_per_s"] / rows[ref][c]["tok_per_s"]:.2f}x' if c in rows[ref] and c in rows["candle-fp32"] else "-" for c in cells]
        print(f"| candle / {ref} | " + " | ".join(ratios) + " | |")
