"""The loop guard that ends a generation repeating itself verbatim (no model needed: token ids only)."""

from __future__ import annotations

from underlay.providers.inline.inference.llama_cpp.loops import LoopGuard


def first_hit(guard: LoopGuard, tokens: list[int], text: str = "") -> int | None:
    """Index of the token at which the guard fires, or None."""
    for i, token in enumerate(tokens):
        if guard.add(token, text):
            return i
    return None


def test_a_repeated_sentence_ends_on_its_third_copy() -> None:
    sentence = list(range(100, 112))  # 12 tokens
    guard = LoopGuard()
    assert first_hit(guard, [1, 2, 3] + sentence * 5) == 3 + 3 * 12 - 1
    assert guard.period == 12


def test_two_copies_are_not_a_loop() -> None:
    sentence = list(range(100, 112))
    assert first_hit(LoopGuard(), [1, 2] + sentence * 2 + [7, 8, 9] + sentence) is None


def test_short_runs_are_lists_not_loops() -> None:
    # "0, 0, 0, ..." (period 2), a row of one token, a short line of code repeated
    assert first_hit(LoopGuard(), [15, 11] * 60) is None
    assert first_hit(LoopGuard(), [42] * 100) is None
    assert first_hit(LoopGuard(), [5, 6, 7, 8] * 30) is None


def test_a_loop_longer_than_the_window_is_not_looked_for() -> None:
    block = list(range(1000, 1300))  # 300 tokens, above max_period
    assert first_hit(LoopGuard(), block * 3) is None
    assert first_hit(LoopGuard(max_period=400), block * 3) == 899


def test_it_stops_watching_inside_a_tool_call() -> None:
    sentence = list(range(100, 112))
    guard = LoopGuard(until="<tool_call>")
    assert first_hit(guard, sentence * 4, text='<tool_call>\n{"name": "f", "arguments": {"q": "') is None
    assert first_hit(LoopGuard(until="<tool_call>"), sentence * 4, text="plain words") == 35
