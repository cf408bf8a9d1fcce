"""llama.cpp (through llama-cpp-python's low-level bindings) on the prompt ids docpipe's
llm_batch bench wrote, for the same GGUF file: prompt tokens/s, single-stream generation tokens/s,
and batched throughput (sentences/s) with continuous batching as llama.cpp's server does it (one
llama_decode per step holding a token of every running sequence plus the prompts of newly admitted
ones), greedy. The head each prompt shares (system turn, instruction) is read once and copied to
every sequence (llama_memory_seq_cp), as docpipe keeps it.

    var/llama-cpp-venv/bin/python bench/llama_anchor.py MODEL.gguf PROMPTS.jsonl [--slots 8] [--lines N]

Prints one RESULT line (JSON) and writes the hypotheses beside PROMPTS (.llama.hyp).
"""
import argparse
import ctypes
import json
import os
import resource
import time

# llama.cpp's threads are OpenMP's: OMP_THREAD_LIMIT=1, which docpipe's runs set for Tesseract,
# would leave it one thread whatever --threads says (seen: every figure about halved). Dropped
# before the library loads, when OpenMP reads it.
if os.environ.pop("OMP_THREAD_LIMIT", None) is not None:
    print("llama_anchor: OMP_THREAD_LIMIT unset for llama.cpp's OpenMP threads")

import llama_cpp as L  # noqa: E402
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--lines", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=1)
    a = ap.parse_args()
    prompts = [json.loads(l) for l in open(a.prompts)][: a.lines]

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    longest = max(len(p["head"]) + len(p["rest"]) + p["cap"] for p in prompts)

    def context(slots):
        cp = L.llama_context_default_params()
        # One extra sequence holds the shared head.
        cp.n_seq_max = slots + 1
        cp.n_ctx = (longest + 64) * (slots + 1)
        cp.n_batch = max(2048, cp.n_ctx)
        cp.n_ubatch = 512
        cp.n_threads = a.threads
        cp.n_threads_batch = a.threads
        cp.kv_unified = True
        return L.llama_init_from_model(model, cp)

    def logits_row(ctx, i):
        ptr = L.llama_get_logits_ith(ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    class Batch:
        def __init__(self, n, seqs):
            self.b = L.llama_batch_init(n, 0, seqs)
            self.n = 0

        def add(self, token, pos, seq, logits):
            b = self.b
            b.token[self.n] = token
            b.pos[self.n] = pos
            b.n_seq_id[self.n] = 1
            b.seq_id[self.n][0] = seq
            b.logits[self.n] = logits
            self.n += 1
            return self.n - 1

        def decode(self, ctx):
            self.b.n_tokens = self.n
            rc = L.llama_decode(ctx, self.b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            self.n = 0

    def run(slots):
        """Continuous batching over every prompt; returns outputs and timings."""
        ctx = context(slots)
        mem = L.llama_get_memory(ctx)
        head_seq = slots
        head = None
        batch = Batch((longest + 64) * (slots + 1), slots + 1)
        waiting = list(range(len(prompts)))
        free = list(range(slots))
        active = {}  # seq -> dict
        outputs = [None] * len(prompts)
        prompt_secs = 0.0
        started = time.perf_counter()
        while waiting or active:
            admitted = []
            while free and waiting:
                i = waiting.pop(0)
                seq = free.pop(0)
                p = prompts[i]
                if head != p["head"]:
                    t = time.perf_counter()
                    L.llama_memory_seq_rm(mem, head_seq, -1, -1)
                    for k, tok in enumerate(p["head"]):
                        batch.add(tok, k, head_seq, False)
                    batch.decode(ctx)
                    head = p["head"]
                    prompt_secs += time.perf_counter() - t
                L.llama_memory_seq_rm(mem, seq, -1, -1)
                L.llama_memory_seq_cp(mem, head_seq, seq, -1, -1)
                admitted.append((i, seq))
            # One decode: a token of every running sequence, then the new prompts.
            rows = {}
            for seq, s in active.items():
                rows[seq] = batch.add(s["next"], s["pos"], seq, True)
            for i, seq in admitted:
                p = prompts[i]
                n0 = len(p["head"])
                for k, tok in enumerate(p["rest"]):
                    last = k == len(p["rest"]) - 1
                    row = batch.add(tok, n0 + k, seq, last)
                    if last:
                        rows[seq] = row
                active[seq] = {"i": i, "pos": n0 + len(p["rest"]), "out": [], "next": None}
            t = time.perf_counter()
            batch.decode(ctx)
            if admitted and len(active) == len(admitted):
                prompt_secs += time.perf_counter() - t
            for seq in list(active):
                s = active[seq]
                tok = int(np.argmax(logits_row(ctx, rows[seq])))
                p = prompts[s["i"]]
                if tok in p["stops"] or L.llama_vocab_is_eog(vocab, tok):
                    done = True
                else:
                    s["out"].append(tok)
                    done = len(s["out"]) >= p["cap"]
                if done:
                    outputs[s["i"]] = s["out"]
                    del active[seq]
                    free.append(seq)
                else:
                    if s["next"] is not None:
                        s["pos"] += 1
                    s["next"] = tok
        total = time.perf_counter() - started
        L.llama_free(ctx)
        return outputs, total, prompt_secs

    def prompt_speed(n=20):
        """Whole prompts read alone (no head reuse), as docpipe's prompt figure."""
        ctx = context(1)
        mem = L.llama_get_memory(ctx)
        batch = Batch(longest + 64, 2)
        tokens = 0
        t = time.perf_counter()
        for p in prompts[:n]:
            ids = p["head"] + p["rest"]
            L.llama_memory_seq_rm(mem, 0, -1, -1)
            for k, tok in enumerate(ids):
                batch.add(tok, k, 0, k == len(ids) - 1)
            batch.decode(ctx)
            tokens += len(ids)
        secs = time.perf_counter() - t
        L.llama_free(ctx)
        return tokens / secs

    def detok(ids):
        buf = ctypes.create_string_buffer(8192)
        n = L.llama_detokenize(vocab, (L.llama_token * len(ids))(*ids), len(ids), buf, len(buf), True, False)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace").strip()

    result = {"lines": len(prompts), "slots": a.slots, "threads": a.threads}
    result["prompt_tok_per_s"] = round(prompt_speed(), 1)
    if a.single:
        outs, secs, psecs = run(1)
        gen = sum(len(o) for o in outs)
        result["single_sentences_per_s"] = round(len(prompts) / secs, 3)
        result["single_gen_tok_per_s"] = round(gen / (secs - psecs), 1)
    outs, secs, _ = run(a.slots)
    result["batched_sentences_per_s"] = round(len(prompts) / secs, 3)
    result["batched_gen_tok_per_s"] = round(sum(len(o) for o in outs) / secs, 1)
    result["tokens"] = sum(len(o) for o in outs)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    with open(a.prompts.replace(".prompts.jsonl", ".llama.hyp"), "w") as f:
        for o in outs:
            f.write(detok(o).replace("\n", " ") + "\n")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
