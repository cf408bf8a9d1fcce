#!/usr/bin/env python3
"""Byte-mutation run for the container formats: N mutated copies of each seed file through
`docpipe process` with the limits on, then a check of what came back.

  bench/mutate.py [--copies N] [--seed S] [--timeout SECS] [--binary PATH] SEED_FILE... 

Writes the mutants under var/mutate/<name>/, runs one `docpipe process` over all of them (extract
stage only: the formats are what is tested), and reports per seed: mutants, results, statuses,
documents without a result, whether docpipe exited on its own within the time limit. Exit code
non-zero on any crash, hang or missing result.

Mutations (seeded, reproducible): flip 1-16 random bytes, overwrite a random run with 0x00 or
0xFF, truncate at a random point, duplicate a random slice, or splice in bytes of another seed.
"""

import argparse
import collections
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time


def mutate(data: bytes, rng: random.Random, others: list) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(5)
    if not b:
        return bytes(b)
    if kind == 0:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:
        start = rng.randrange(len(b))
        run = rng.randint(1, 512)
        b[start:start + run] = bytes([rng.choice((0, 255))]) * len(b[start:start + run])
    elif kind == 2:
        b = b[: rng.randrange(1, len(b))]
    elif kind == 3:
        start = rng.randrange(len(b))
        piece = b[start:start + rng.randint(1, 4096)]
        at = rng.randrange(len(b))
        b[at:at] = piece
    else:
        other = rng.choice(others)
        if other:
            start = rng.randrange(len(other))
            piece = other[start:start + rng.randint(1, 4096)]
            at = rng.randrange(len(b))
            b[at:at + len(piece)] = piece
    return bytes(b)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("seeds", nargs="+", type=pathlib.Path)
    ap.add_argument("--copies", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds for the whole docpipe run")
    ap.add_argument("--binary", default="target/release/docpipe")
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path("var/mutate"))
    ap.add_argument("--analyze", action="store_true", help="only read the results of the last run")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    inputs = args.work / "in"
    out = args.work / "out"
    seeds = [(p.name, p.read_bytes()) for p in args.seeds]
    by_file = {}
    if not args.analyze:
        shutil.rmtree(args.work, ignore_errors=True)
    for name, data in seeds:
        folder = inputs / name.replace(".", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.copies):
            mutant = mutate(data, rng, [d for _, d in seeds])
            path = folder / f"{i:04d}{pathlib.Path(name).suffix}"
            if not args.analyze:
                path.write_bytes(mutant)
            by_file[str(path.resolve())] = name

    if not args.analyze:
        env = dict(os.environ, OMP_THREAD_LIMIT="1")
        started = time.monotonic()
        cmd = [args.binary, "process", str(inputs), "--out", str(out), "--stages", "extract", "--batch", "mutate"]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
            outcome = {"exited": True, "code": proc.returncode, "stderr": proc.stderr[-20000:]}
        except subprocess.TimeoutExpired as e:
            stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            outcome = {"exited": False, "code": None, "stderr": stderr[-20000:]}
        outcome["seconds"] = time.monotonic() - started
        (args.work / "run.json").write_text(json.dumps(outcome))
    outcome = json.loads((args.work / "run.json").read_text())
    exited, code, stderr, elapsed = outcome["exited"], outcome["code"], outcome["stderr"], outcome["seconds"]

    statuses = collections.defaultdict(collections.Counter)
    stage_errors = collections.defaultdict(collections.Counter)
    seen = set()
    results = out / "results.jsonl"
    if results.exists():
        for line in results.read_text().split("\n"):
            if not line:
                continue
            r = json.loads(line)
            if r.get("document", {}).get("parent") or r.get("parent"):
                continue
            doc = r["document"]
            # A submitted file's result names it by its path as given on the command line.
            path = str((pathlib.Path(doc["filename"])).resolve()) if os.path.isabs(doc["filename"]) else None
            seed = None
            for candidate, name in by_file.items():
                if candidate.endswith(doc["filename"]):
                    seed, path = name, candidate
                    break
            if seed is None:
                continue
            seen.add(path)
            statuses[seed][r["status"]] += 1
            for stage in r.get("stages", []):
                if stage.get("error"):
                    stage_errors[seed][stage["error"]["kind"]] += 1
    unreadable = out / "unreadable.jsonl"
    if unreadable.exists():
        for line in unreadable.read_text().split("\n"):
            if not line:
                continue
            u = json.loads(line)
            for candidate, name in by_file.items():
                if candidate.endswith(u.get("path", "")):
                    seen.add(candidate)
                    statuses[name]["unreadable"] += 1
                    break

    missing = collections.Counter(by_file[p] for p in by_file if p not in seen)
    print(f"docpipe {'exited with ' + str(code) if exited else 'was killed at the time limit'} after {elapsed:.0f} s")
    print("| seed | mutants | with a result | missing | statuses | error kinds |")
    print("|---|---|---|---|---|---|")
    for name, _ in seeds:
        got = sum(statuses[name].values())
        print(f"| {name} | {args.copies} | {got} | {missing[name]} | {dict(statuses[name])} | {dict(stage_errors[name])} |")
    crashed = not exited or code not in (0, 1) or "panicked" in (stderr or "")
    if crashed:
        print("docpipe crashed or hung:", (stderr or "")[-2000:], file=sys.stderr)
    return 1 if crashed or sum(missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
