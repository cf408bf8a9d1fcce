#!/usr/bin/env python3
"""PyTorch side of the GGUF speed comparison: transformers reads the installed GGUF model (dequantized
to float32, its only CPU path) and translates the same FLORES lines with the same prompts and token cap
as docpipe (models/src/llm/tasks.rs, translate-v2), greedy. Prints prompt and generation tokens per
second and peak RSS as one RESULT line.

    pip install torch==2.15.0 transformers==5.24.0 accelerate==1.15.0 gguf==0.19.0
    python3 bench/llm_torch.py [LINES] [LANG]        (10 spa_Latn by default)
"""
import json
import os
import resource
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
NAMES = {"spa_Latn": "Spanish", "zho_Hans": "Chinese", "rus_Cyrl": "Russian", "fra_Latn": "French", "deu_Latn": "German", "vie_Latn": "Vietnamese"}


def main():
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    lang = sys.argv[2] if len(sys.argv) > 2 else "spa_Latn"
    torch.set_num_threads(os.cpu_count())
    gguf = os.path.join(REPO, "var/models/qwen2.5-coder-0.5b-instruct/model.gguf")
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(gguf, os.path.join(tmp, "model.gguf"))
        started = time.time()
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file="model.gguf", dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file="model.gguf")
        load = time.time() - started
    stops = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    name = NAMES[lang]
    with open(os.path.join(REPO, f"tests/data/mt/flores200-devtest-1-100.{lang}"), encoding="utf-8") as f:
        texts = f.read().splitlines()[:lines]
    prompt_tokens = tokens = 0
    prompt_secs = gen_secs = 0.0
    outputs = []
    for text in texts:
        system = f"You are a professional translator. You translate {name} into English faithfully and completely."
        user = f"Translate this {name} text into English. Reply with the translation only.\n\n{text}"
        prompt = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        cap = min(256, 3 * len(tok.encode(text, add_special_tokens=False)) + 32)
        with torch.no_grad():
            t0 = time.time()
            out = model(ids, use_cache=True)
            t1 = time.time()
            past, new = out.past_key_values, []
            token = int(out.logits[0, -1].argmax())
            while token not in stops and len(new) < cap:
                new.append(token)
                out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = int(out.logits[0, -1].argmax())
            t2 = time.time()
        prompt_tokens += ids.shape[1]
        tokens += len(new)
        prompt_secs += t1 - t0
        gen_secs += t2 - t1
        outputs.append(tok.decode(new, skip_special_tokens=True).strip())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"lines": len(texts), "load_s": round(load, 2), "prompt_tok_per_s": round(prompt_tokens / prompt_secs, 1),
                                  "gen_tok_per_s": round(tokens / gen_secs, 1), "tokens": tokens, "peak_rss_mib": round(rss)}))
    for o in outputs[:3]:
        print("  " + o)


if __name__ == "__main__":
    main()
