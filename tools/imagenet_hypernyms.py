#!/usr/bin/env python3
"""Regenerate dissect/data/imagenet_hypernyms.tsv: the WordNet 3.0 hypernyms of each ImageNet-1k class.

Step 2's grounded candidates (docs/method.md) name what the classes a neuron's captions mention have
in common: "domestic cat" for captions of tabbies, tiger cats and Persian cats. ImageNet-1k classes
are WordNet 3.0 noun synsets (see tools/imagenet_hyponyms.py, whose downloads and checks this
reuses). For each class this walks the hypernym closure (pointers `@` and `@i`) and writes

    <class index>\t<offset>:<depth>:<name>|<offset>:<depth>:<name>|...

every ancestor once, nearest first (then by offset); <depth> is the ancestor's shortest distance
from WordNet's root `entity`, <name> its first lemma (lower-case, '_' as space).

Python 3.11 standard library only. Usage:

    python3 tools/imagenet_hypernyms.py [--out dissect/data/imagenet_hypernyms.tsv]
"""
from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imagenet_hyponyms import CLASSES, HEADER, WORDNET, inputs, read_synsets  # noqa: E402


def depths(synsets: dict[int, tuple[list[str], list[int]]]) -> dict[int, int]:
    """Shortest distance of every synset from a root (a synset without hypernyms)."""
    memo: dict[int, int] = {}

    def depth(o: int) -> int:
        if o not in memo:
            parents = synsets[o][1]
            memo[o] = 0 if not parents else 1 + min(depth(p) for p in parents)
        return memo[o]

    sys.setrecursionlimit(10000)
    for o in synsets:
        depth(o)
    return memo


def main() -> int:
    args, _, wnids, data_noun = inputs(__doc__, "imagenet_hypernyms.tsv")
    synsets = read_synsets(data_noun, ("@", "@i"))
    depth = depths(synsets)

    lines = []
    for c in range(1000):
        start = int(wnids[str(c)][1:])
        dist, queue = {start: 0}, deque([start])
        while queue:
            o = queue.popleft()
            for h in synsets[o][1]:
                if h not in dist:
                    dist[h] = dist[o] + 1
                    queue.append(h)
        ancestors = sorted((d, o) for o, d in dist.items() if o != start)
        fields = []
        for _, o in ancestors:
            name = synsets[o][0][0]
            if any(s in name for s in "|:\t"):
                sys.exit(f"class {c}: ancestor {o} is named {name!r}, which holds a separator")
            fields.append(f"{o}:{depth[o]}:{name}")
        lines.append(f"{c}\t{'|'.join(fields)}")
    header = HEADER.replace("hyponyms", "hypernyms").replace("<lemma>|<lemma>|...", "<offset>:<depth>:<name>|...")
    header = header.format(wn_file=WORDNET["file"], wn_sha=WORDNET["sha256"], ic_file=CLASSES["file"],
                           ic_sha=CLASSES["sha256"])
    header = header.replace("Used by leak-free captioning (dissect/src/imagenet.rs). Only classes with hypernyms are listed.",
                            "Used by Step 2's grounded candidates (dissect/src/imagenet.rs). Every class is listed.")
    args.out.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{args.out}: 1000 classes, {sum(l.count('|') + 1 for l in lines)} ancestors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
