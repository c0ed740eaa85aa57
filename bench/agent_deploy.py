"""``underlay agent deploy`` time for an agent folder with a 100-file knowledge folder.

What it measures: a real server (``underlay run``: files on localfs, vector stores on sqlite-vec, MiniLM
embeddings, the Agents API) and the CLI's ``agent deploy`` as a user runs it, in this process, against the
folder's ``server`` environment. The folder is ``underlay agent init --template rag`` with its knowledge
replaced by ``--files`` generated Markdown documents (about ``--words`` words each, seeded). Three deploys:

1. first: every file uploaded, chunked and embedded, then the definition posted (version 1);
2. unchanged: content hashes match, nothing is uploaded (version 2, same vector store);
3. one file changed: only its new content is uploaded and embedded (version 3); its old content stays
   attached for versions 1 and 2, whose ``file_search`` filters name it.

Prints the wall time of each and the files uploaded (read from the sync's own summary line).

    python bench/agent_deploy.py [--files 100] [--words 250]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import free_port, start_underlay, wait_http  # noqa: E402

WORDS = (
    "harbour lantern granite keeper museum ferry timetable orchard cellar bakery recipe flour oven tide "
    "signal railway bridge valley river meadow archive ledger invoice customer refund warranty parcel"
).split()


def _config(state: Path) -> dict[str, object]:
    return {
        "state_dir": str(state),
        "apis": ["inference", "models", "files", "vector_io", "vector_stores", "conversations", "agents", "responses"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {
                        "models": [{"name": "qwen2.5-coder-0.5b-instruct", "packaged": "qwen2.5-coder-0.5b-instruct"}]
                    },
                },
                {
                    "provider_id": "sentence-transformers",
                    "provider_type": "inline::sentence-transformers",
                    "config": {"models": [{"name": "all-minilm-l6-v2", "packaged": "all-minilm-l6-v2"}]},
                },
            ],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
        },
    }


def _document(rng: random.Random, index: int, words: int) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"# Note {index}\n\nReference code N-{index:04d}. {body}.\n"


def _deploy(main: object, folder: Path) -> tuple[float, str]:
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["agent", "deploy", str(folder), "--env", "server"])  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"deploy failed ({code}): {err.getvalue()[-2000:]}")
    return elapsed, out.getvalue() + err.getvalue()


def _uploaded(log: str) -> str:
    found = re.search(r"knowledge: (\d+) uploaded, (\d+) unchanged", log)
    return f"{found.group(1)} files, {found.group(2)} unchanged" if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--words", type=int, default=250)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from underlay.cli.main import main as cli

    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        root = Path(tmp)
        (root / "run.yaml").write_text(yaml.safe_dump(_config(root / "state")))
        port = free_port()
        server = start_underlay(root / "run.yaml", port, root / "server.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/health", server, timeout=300)
            os.environ["UNDERLAY_AGENT_URL"] = f"http://127.0.0.1:{port}/v1"
            folder = root / "desk"
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert cli(["agent", "init", str(folder), "--template", "rag"]) == 0
            knowledge = folder / "knowledge"
            for old in knowledge.iterdir():
                old.unlink()
            rng = random.Random(20261207)
            for index in range(args.files):
                (knowledge / f"note-{index:03d}.md").write_text(_document(rng, index, args.words))
            size_kb = sum(p.stat().st_size for p in knowledge.iterdir()) / 1024

            print(f"knowledge: {args.files} files, {size_kb:.0f} KB")
            first, log1 = _deploy(cli, folder)
            print(f"first deploy:      {first:7.2f} s  (uploaded {_uploaded(log1)})")
            again, log2 = _deploy(cli, folder)
            print(f"unchanged deploy:  {again:7.2f} s  (uploaded {_uploaded(log2)})  {first / again:.1f}x faster")
            (knowledge / "note-000.md").write_text(_document(rng, 0, args.words) + "\nChanged.\n")
            changed, log3 = _deploy(cli, folder)
            print(f"one file changed:  {changed:7.2f} s  (uploaded {_uploaded(log3)})")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
