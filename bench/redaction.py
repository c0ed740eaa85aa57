"""Secret redaction: characters examined per character given, and time per call, on hostile and normal text.

Why: the redactor runs on every log line, error message and span attribute, and much of that text comes
from clients. Its rules are written to read each character a small, constant number of times
(``Redactor.scanned`` counts the characters each rule examines); this script prints that ratio for
100,000-character adversarial inputs with the 16 KiB cut lifted, the wall time of those calls, the time
of a call with the cut in force, and the time per call on ordinary log lines (the hot path).

    python bench/redaction.py
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from underlay.shared.redact import Redactor  # noqa: E402

N = 100_000
HOSTILE = {
    "word run": "a" * N,
    "keyword run": "token" * (N // 5),
    "unclosed quotes": 'secret: "' * (N // 9),
    "unclosed braces": "x-underlay-provider-data: {" * (N // 27),
    "scheme runs": "://" * (N // 3),
    "user without password": "http://" + "u" * N,
    "bearer runs": "Bearer " * (N // 7),
    "newlines": "\n" * N,
}
LINES = [
    "auth: GET /v1/vector_stores/vs_abc123 refused (401 missing_credentials)",
    "provider down: All connection attempts failed from http://127.0.0.1:9/v1/chat/completions; retry 1 of 1",
    "calling http://u:pw-secret-1@host/v1 with key sk-live-123456789 and Authorization: Bearer abc.def",
]


def main() -> None:
    print(f"{'input (100,000 chars)':<24} {'examined/char':>14} {'uncut ms':>9} {'cut ms':>7}")
    worst = 0.0
    for name, text in HOSTILE.items():
        redactor = Redactor(["zzTopSecretValue"])
        started = time.perf_counter()
        redactor(text, limit=10 * N)
        uncut = (time.perf_counter() - started) * 1000
        ratio = sum(redactor.scanned.values()) / len(text)
        worst = max(worst, ratio)
        started = time.perf_counter()
        Redactor(["zzTopSecretValue"])(text)
        cut = (time.perf_counter() - started) * 1000
        print(f"{name:<24} {ratio:>14.1f} {uncut:>9.1f} {cut:>7.1f}")
    print(f"worst characters examined per character, all rules together: {worst:.1f} (target: a constant, <= 60)")
    redactor = Redactor(["zzTopSecretValue"])
    for line in LINES:
        per_call = min(timeit.repeat(lambda line=line: redactor(line), number=2000, repeat=5)) / 2000 * 1e6
        print(f"ordinary line of {len(line)} chars: {per_call:.1f} us per call")


if __name__ == "__main__":
    main()
