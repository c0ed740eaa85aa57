"""Spotting a generation that has fallen into a verbatim loop, so it can end instead of running on.

Small models under greedy decoding sometimes repeat the same sentence (or list item, or JSON
fragment) until they reach the token limit: the answer becomes a wall of copies, the request takes
the longest possible time, and an agent loop sees ``length`` where the model had in fact finished
saying what it had to say. A sampling penalty would change every answer to avoid a rare failure;
this check changes nothing until the tail of the output is the same block of tokens several times
in a row, and then ends the generation there.

The check is exact (token ids, not similar text) and cheap: after each token, only periods at which
the newest token also occurred before are tried, and each try stops at the first mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopGuard:
    """Watches token ids; :meth:`add` returns True once the last ``copies`` blocks of ``period``
    tokens are identical, for some ``period`` between ``min_period`` and ``max_period``.

    The defaults need three copies of a block of at least eight tokens (24 tokens in all) that is not
    itself a run of something shorter, so a stutter ("no, no, no"), a list of zeros or a short
    repeated code line does not count, while a repeated sentence is caught on its third copy.
    """

    copies: int = 3
    min_period: int = 8
    max_period: int = 200
    #: Once the text contains this, stop watching (a tool call: its grammar ends it, and cutting it
    #: short would only leave half a call).
    until: str | None = None
    tokens: list[int] = field(default_factory=list)
    #: The period of the loop found (0 while none).
    period: int = 0

    def add(self, token: int, text: str = "") -> bool:
        """Record the newest token (``text``: the output so far); True when the output is looping."""
        if self.until is not None and self.until in text:
            return False
        tokens = self.tokens
        tokens.append(token)
        n = len(tokens)
        longest = min(self.max_period, n // self.copies)
        if longest < self.min_period:
            return False
        for period in range(self.min_period, longest + 1):
            if tokens[n - 1 - period] != token:
                continue
            if self._repeats(period, period * (self.copies - 1)):
                # A run with a short period ("0, 0, 0, ...", a row of dashes) is periodic at every
                # multiple of it too; that is a list or a rule, not a repeated sentence.
                whole = period * self.copies
                if any(self._repeats(short, whole - short) for short in range(1, self.min_period)):
                    return False
                self.period = period
                return True
        return False

    def _repeats(self, period: int, span: int) -> bool:
        """Whether each of the last ``span`` tokens equals the one ``period`` before it."""
        tokens, n = self.tokens, len(self.tokens)
        return all(tokens[n - 1 - k] == tokens[n - 1 - k - period] for k in range(span))
