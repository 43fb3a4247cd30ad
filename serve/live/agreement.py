"""Which words of a live turn are stable: LocalAgreement-2 over successive passes.

Each pass decodes the whole turn so far. A word is committed (sent as a
delta, never taken back) once two consecutive passes agree on it and on
every word before it; what the latest pass says beyond that is the unstable
tail. Words are compared without case and punctuation, and sent as the
latest pass spelled them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NOT_WORD = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    return _NOT_WORD.sub("", word.lower())


@dataclass
class Agreement:
    """The committed words of one turn, and the last pass's words to agree with."""

    committed: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)

    def passed(self, text: str) -> list[str]:
        """A new pass's text: the words it newly commits (in order; possibly none)."""
        words = text.split()
        agreed = 0
        for a, b in zip(self.previous, words):
            if _key(a) != _key(b):
                break
            agreed += 1
        self.previous = words
        if agreed <= len(self.committed) or not self._extends(words):
            return []
        new = words[len(self.committed):agreed]
        self.committed.extend(new)
        return new

    def tail(self) -> list[str]:
        """The latest pass's words after the committed ones (the extension's partial)."""
        return self.previous[len(self.committed):] if self._extends(self.previous) else []

    def final(self, text: str) -> list[str]:
        """The turn's last pass: every word it has beyond the committed ones, which stay as sent."""
        words = text.split()
        start = len(self.committed)
        if not self._extends(words):
            # The last pass reads the start differently. What was sent stays; append what this pass has
            # after the last committed word: its spelling nearest its position, else its position.
            anchor = _key(self.committed[-1])
            found = [i for i, w in enumerate(words) if _key(w) == anchor]
            start = min(found, key=lambda i: abs(i - (start - 1))) + 1 if found else start
        new = words[start:]
        self.committed.extend(new)
        self.previous = words
        return new

    def _extends(self, words: list[str]) -> bool:
        """``words`` begins with the committed words."""
        return len(words) >= len(self.committed) and all(
            _key(a) == _key(b) for a, b in zip(self.committed, words))


def joined(words: list[str], first: bool) -> str:
    """Words as a delta: a leading space unless they open the transcript."""
    text = " ".join(words)
    return text if first or not text else " " + text
