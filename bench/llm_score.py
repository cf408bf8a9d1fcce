#!/usr/bin/env python3
"""chrF and BLEU (sacreBLEU, default settings) of bench/results/llm/<lang>.hyp against the FLORES
English references; prints a markdown table. Needs `pip install sacrebleu`."""
import glob
import os
import sacrebleu

here = os.path.dirname(os.path.abspath(__file__))
ref = open(os.path.join(here, "../tests/data/mt/flores200-devtest-1-100.eng_Latn"), encoding="utf-8").read().splitlines()
print("| source | lines | chrF | BLEU |")
print("|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(here, "results/llm/*.hyp"))):
    hyp = open(path, encoding="utf-8").read().splitlines()
    r = ref[: len(hyp)]
    chrf = sacrebleu.corpus_chrf(hyp, [r]).score
    bleu = sacrebleu.corpus_bleu(hyp, [r]).score
    print(f"| {os.path.basename(path)[:-4]} | {len(hyp)} | {chrf:.1f} | {bleu:.1f} |")
