"""Which windows go into the next engine call: lanes taking turns, round robin, equal options, at most a batch.

Requests with work queued take turns at being the head of an engine call:
the head is the request served least recently, and a request that just
arrived counts as served just before the call then in flight. So a request
that arrives while a 3-hour file is being decoded is in the next call,
whatever either request asked for, and a stream of new short requests (live
passes) never keeps a request that has waited longer out of its turn:

- **the batched lane**: the head's windows and those of every other waiting
  request with equal decoding options, one window per request per round,
  until ``max_batch`` engine windows are filled (with packing on, short
  windows of several requests with the same prompt share one engine window).
  Where the engine takes a prompt per window, requests whose options differ
  only in their prompt share the call, each window with its own prompt;
- **the sequential lane** (``condition_on_previous_text``): the head's next
  window alone, with its previous text as the prompt; one window per call,
  so the request takes turns with everyone else at Whisper's 30 s windows
  and can be cancelled between them.

Urgent requests, a live turn's last pass, go first, in a call of urgent
requests only: their words are the ones a speaker is waiting for (most live
words come with that pass), and in a call with other sessions' interim
passes they waited for all of those too (on a CPU a batch costs about the
sum of its windows). The call after an urgent one goes round robin, so
speakers ending turn after turn never starve the file requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

from .audio import SAMPLE_RATE
from .job import Entry, Job
from .options import DecodeOptions
from .packing import PACK_GAP, fits

MAX_WINDOW = 30 * SAMPLE_RATE
"""Whisper's window: no engine window (packed or not) is longer."""


@dataclass
class Call:
    """One engine call: packs of windows (one request each, or several when packed), all with ``options``."""

    number: int
    options: DecodeOptions
    packs: list[list[Entry]]
    prompts: Optional[list[Optional[str]]] = None
    """Each pack's own prompt, where the engine takes one per window (``options`` has none then)."""
    urgent: bool = False
    """Taken for its urgent requests, ahead of their turn."""

    @property
    def entries(self) -> list[Entry]:
        return [e for pack in self.packs for e in pack]

    @property
    def jobs(self) -> list[Job]:
        return list({id(e.job): e.job for e in self.entries}.values())


def next_call(jobs: Sequence[Job], number: int, max_batch: int, packing: bool,
              prompt_per_window: bool = False, urgent_first: bool = True) -> Optional[Call]:
    """Take the windows of the next engine call (number ``number``) from the queues of ``jobs`` (oldest first).

    ``prompt_per_window``: the engine takes a prompt for each window. ``urgent_first``: urgent requests
    may go ahead (false after a call that took them so). The caller holds the scheduler's lock. None when
    no request has a window queued.
    """
    waiting = [j for j in jobs if j.queue]
    if not waiting:
        return None
    urgent = [j for j in waiting if j.urgent] if urgent_first else []
    if urgent:
        waiting = urgent
    head = min(waiting, key=lambda j: j.last_turn)  # the least recently served (oldest first among equals)
    head.last_turn = number
    if head.options.sequential:
        prompt = head.previous_text().strip() or None
        return Call(number, replace(head.options.decode, initial_prompt=prompt), [[head.queue.popleft()]],
                    urgent=bool(urgent))
    options = _lane(head.options.decode, prompt_per_window)
    order = [head] + [j for j in waiting if j is not head and not j.options.sequential
                      and _lane(j.options.decode, prompt_per_window) == options]
    packable = packing and options.language is not None  # a pack's windows share one language
    packs: list[list[Entry]] = []
    used: list[int] = []
    progressed = True
    while progressed:
        progressed = False
        for job in order:  # one window per request per round
            if not job.queue:
                continue
            entry = job.queue[0]
            size = entry.window.length
            spot = None
            if packable and not entry.solo:
                spot = next((i for i, p in enumerate(packs) if not p[0].solo and fits(used[i], size, MAX_WINDOW)
                             and _prompt(p[0]) == _prompt(entry)), None)
            if spot is not None:
                packs[spot].append(entry)
                used[spot] += PACK_GAP + size
            elif len(packs) < max_batch:
                packs.append([entry])
                used.append(size)
            else:
                continue
            job.queue.popleft()
            progressed = True
    return Call(number, options, packs, [_prompt(p[0]) for p in packs] if prompt_per_window else None,
                urgent=bool(urgent))


def _lane(options: DecodeOptions, prompt_per_window: bool) -> DecodeOptions:
    """What must be equal for two requests' windows to share a call."""
    return replace(options, initial_prompt=None) if prompt_per_window else options


def _prompt(entry: Entry) -> Optional[str]:
    return entry.job.options.decode.initial_prompt

