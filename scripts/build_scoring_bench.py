"""Build the human-labelled set ``bench/scoring.py`` measures judge agreement on.

Source: SimLex-999 (Hill, Reichart and Korhonen 2015): 999 English word pairs, each with the mean of
about 50 people's similarity ratings on a 0-10 scale. It comes from a pinned PyPI file, gensim 4.3.3's
wheel, which ships it as ``gensim/test/test_data/simlex999.txt`` (gensim is LGPL-2.1; the set's
authors publish it for free research use on their page, cited in the file's first line). The output,
``bench/data/scoring_simlex.jsonl.gz``, is a pure function of that file: one JSON line per pair,
``{"word1", "word2", "human"}``, in the file's order. Nothing here runs at bench time.

Get the input (about 24 MB, PyPI only) and build::

    pip download --no-deps --only-binary :all: --python-version 3.11 \\
        --platform manylinux_2_17_x86_64 -d /tmp/sc gensim==4.3.3
    python scripts/build_scoring_bench.py --inputs /tmp/sc
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "scoring_simlex.jsonl.gz"
WHEEL = "gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
SHA256 = "d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc"
MEMBER = "gensim/test/test_data/simlex999.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, required=True, help="the folder holding the gensim wheel")
    args = parser.parse_args()
    wheel = args.inputs / WHEEL
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {SHA256}; download gensim==4.3.3 again")
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(MEMBER).decode("utf-8")
    pairs = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        word1, word2, human = line.split("\t")
        pairs.append({"word1": word1, "word2": word2, "human": float(human)})
    if len(pairs) != 999:
        raise SystemExit(f"{MEMBER}: {len(pairs)} pairs, expected 999")
    body = "".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs).encode()
    OUT.write_bytes(gzip.compress(body, mtime=0))
    print(f"{OUT.relative_to(ROOT)}: {len(pairs)} pairs, sha256 {hashlib.sha256(body).hexdigest()[:12]}")


if __name__ == "__main__":
    main()
