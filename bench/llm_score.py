#!/usr/bin/env python3
"""chrF and BLEU (sacreBLEU, default settings) of bench/results/llm/<model>/<lang>.hyp against the
FLORES English references; prints a markdown table. Needs `pip install sacrebleu`.

    python3 bench/llm_score.py [MODEL [LINES]]   (qwen2.5-coder-0.5b-instruct, every line by default)
    python3 bench/llm_score.py DIR [LINES]       (every *.hyp in DIR, e.g. bench/results/llm-batch/<model>)

LINES scores only the first LINES hypotheses, to compare models evaluated on different lengths."""
import glob
import os
import sys

import sacrebleu

here = os.path.dirname(os.path.abspath(__file__))
ref = open(os.path.join(here, "../tests/data/mt/flores200-devtest-1-100.eng_Latn"), encoding="utf-8").read().splitlines()
print("| source | lines | chrF | BLEU |")
print("|---|---|---|---|")
name = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-0.5b-instruct"
folder = name if os.path.isdir(name) else os.path.join(here, "results/llm", name)
for path in sorted(glob.glob(os.path.join(folder, "*.hyp"))):
    hyp = open(path, encoding="utf-8").read().splitlines()
    if len(sys.argv) > 2:
        hyp = hyp[: int(sys.argv[2])]
    r = ref[: len(hyp)]
    chrf = sacrebleu.corpus_chrf(hyp, [r]).score
    bleu = sacrebleu.corpus_bleu(hyp, [r]).score
    print(f"| {os.path.basename(path)[:-4]} | {len(hyp)} | {chrf:.1f} | {bleu:.1f} |")
