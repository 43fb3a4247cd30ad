"""Faults stay with their request; a broken engine says so: the scheduler under injected faults, real tiny.en.

Each test wraps the real engine (tests/core/injection.py) so that it raises,
runs out of memory, hangs or waits for the test, or breaks the scheduler's
own parts, and watches every request's outcome. Nothing is timed: the
engine's calls are counted, and requests are batched together by holding
the engine at a gate until they are all queued.
"""

from __future__ import annotations

import shutil
import threading

import pytest

from serve.core import scheduler as scheduler_module
from serve.core.job import Job
from serve.core.segments import Window
from serve.errors import CancelledError, EngineFaultError, ServiceFaultError
from tests.core.injection import Gate, Raise, Wrapped, assert_own_text, outcome, wait_until

CUDA_ERROR = "CUDA error: an illegal memory access was encountered"
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


# --- an engine error fails only its own request ----------------------------------------------------------


@pytest.mark.parametrize("packing", [False, True], ids=["stacked", "packed"])
def test_an_engine_error_fails_only_the_request_that_causes_it(real, corpus, marked, run, packing):
    """8 requests in one batch, one of which makes the engine raise: 7 get their own text, 1 an EngineFaultError."""
    gate, fault = Gate(), Raise(lambda: RuntimeError("the engine cannot decode this"))
    r = run(Wrapped(real, gate, fault), packing=packing)
    clips = corpus[:7]
    jobs = r.together(gate, [c.path for c in clips] + [marked])
    results = [outcome(j) for j in jobs]
    assert_own_text(results[:7], clips)
    assert isinstance(results[7], EngineFaultError), results[7]
    assert "the engine cannot decode this" in str(results[7])
    assert fault.raised >= 2, "the request was never batched with others: the test proved nothing"
    assert r.scheduler.health.ok and not r.unhealthy


def test_a_batch_that_runs_out_of_memory_is_halved_and_repeated_oom_makes_the_engine_unhealthy(
        real, corpus, marked, run):
    gate, oom = Gate(), Raise(lambda: RuntimeError(CUDA_OOM))
    r = run(Wrapped(real, gate, oom), max_batch=4)
    clips = corpus[:3]
    results = [outcome(j) for j in r.together(gate, [c.path for c in clips] + [marked])]
    assert_own_text(results[:3], clips)
    assert isinstance(results[3], ServiceFaultError) and "out of memory" in str(results[3])  # a retry may succeed
    assert r.scheduler.health.ok, "one request out of memory is not a broken engine"
    for _ in range(2):  # the same window alone, out of memory twice more, nothing between
        assert isinstance(outcome(r.submit(marked)), ServiceFaultError)
    assert not r.scheduler.health.ok and "out of memory" in r.scheduler.health.problem
    assert len(r.unhealthy) == 1
    with pytest.raises(ServiceFaultError):
        r.submit(corpus[0].path)


# --- a broken engine makes every request and /ping say so (the /ping side: tests/http/test_health.py) -----


def test_a_device_error_makes_the_engine_unhealthy_and_fails_every_request(real, corpus, marked, run):
    gate = Gate()
    r = run(Wrapped(real, gate, Raise(lambda: RuntimeError(CUDA_ERROR))))
    results = [outcome(j) for j in r.together(gate, [corpus[0].path, marked, corpus[1].path])]
    assert all(isinstance(x, ServiceFaultError) for x in results), results
    assert "illegal memory access" in r.scheduler.health.problem
    assert len(r.unhealthy) == 1 and "device error" in r.unhealthy[0]
    with pytest.raises(ServiceFaultError, match="can no longer serve"):
        r.submit(corpus[2].path)


def test_a_hung_engine_call_trips_the_watchdog(real, corpus, run):
    gate = Gate()  # never opened while the test watches: the call hangs
    r = run(Wrapped(real, gate), engine_timeout_s=1.0)
    job = r.submit(corpus[0].path)
    gate.wait_entered()
    result = outcome(job)
    assert isinstance(result, ServiceFaultError) and "hung" in str(result), result
    assert not r.scheduler.health.ok and "WHISPER_ENGINE_TIMEOUT_S" in r.scheduler.health.problem
    assert len(r.unhealthy) == 1


def test_a_dead_inference_thread_makes_the_engine_unhealthy(real, corpus, run, monkeypatch):
    real_next_call = scheduler_module.next_call

    def broken(jobs, *args, **kwargs):
        # Only once a request waits: the thread also looks for work at start, and dying there would make
        # submit itself refuse (also right, but then the waiting request's 503 is not what was tested).
        if jobs:
            raise RuntimeError("a bug in batch forming")
        return real_next_call(jobs, *args, **kwargs)

    monkeypatch.setattr(scheduler_module, "next_call", broken)
    r = run(Wrapped(real))
    result = outcome(r.submit(corpus[0].path))
    assert isinstance(result, ServiceFaultError), result
    assert "inference thread died" in r.scheduler.health.problem
    assert not r.scheduler._thread.is_alive()


# --- our side failing is never a shorter transcript ------------------------------------------------------


@pytest.mark.parametrize("speech", [False, True])
def test_a_cutter_that_raises_fails_its_request_at_once(real, long_clip, run, monkeypatch, speech):
    """The VAD raising after the first window: a 503, not a transcript of the first window. A diarized
    request's hand-over of speech regions is closed, so its diarization does not wait on it."""
    real_windows = scheduler_module.windows

    def breaking(audio, options, slot, speech=None):
        for k, window in enumerate(real_windows(audio, options, slot, speech)):
            if k == 1:
                raise RuntimeError("the VAD failed")
            yield window

    monkeypatch.setattr(scheduler_module, "windows", breaking)
    r = run(Wrapped(real))
    job = r.submit(long_clip.path, speech=speech)
    result = outcome(job)
    assert isinstance(result, ServiceFaultError) and "the VAD failed" in str(result), result
    wait_until(lambda: job.audio.done, what="the request's ffmpeg stopped")
    assert r.scheduler.health.ok
    if speech:
        regions, closed = job.speech.take(0)
        assert closed and regions, "the first window's regions, then the close"


def test_a_decoder_that_cannot_start_fails_its_request_at_once(real, corpus, run, monkeypatch):
    """ffmpeg unable to start (EMFILE) raises before it could record anything: the request must not hang."""
    def no_process(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(scheduler_module, "decode_to_file", no_process)
    r = run(Wrapped(real))
    result = outcome(r.submit(corpus[0].path))
    assert isinstance(result, ServiceFaultError) and "Too many open files" in str(result), result
    assert not r.engine.calls


# --- a request's files stay while an engine call reads them ---------------------------------------------


def _two_queued_behind_a_call(r, gate, corpus):
    """A long request held in the engine at `gate`, and two clips cut and queued behind it, to share the next call."""
    blocker = r.submit(corpus[8].path)
    gate.wait_entered()
    first, second = r.submit(corpus[0].path), r.submit(corpus[1].path)
    wait_until(lambda: first.cut_all and second.cut_all)
    return blocker, first, second


def test_a_request_given_up_mid_batch_keeps_its_files_until_the_engine_call_ends(real, corpus, run, monkeypatch):
    """A client leaving (its folder released) just as its window is read must not fail its batch mates."""
    gate = Gate()
    r = run(Wrapped(real, gate))
    leaving: dict[str, Job] = {}
    read_audio = Window.audio
    released = threading.Event()

    def audio(window, source):
        job = leaving.get(str(source.path))
        if job is not None and not job.cancelled.is_set():
            r.scheduler.cancel(job)  # the client left; its reader gives its folder up at once
            folder = r.scratch[job.id]
            job.release(lambda: (shutil.rmtree(folder), released.set()))
        return read_audio(window, source)

    monkeypatch.setattr(Window, "audio", audio)
    blocker, gone, stays = _two_queued_behind_a_call(r, gate, corpus)
    leaving[str(gone.audio.path)] = gone
    gate.open_all()
    blocker.wait(600)
    assert isinstance(outcome(gone), CancelledError)
    assert_own_text([outcome(stays)], [corpus[1]])
    assert released.wait(60) and not r.scratch[gone.id].exists()


def test_a_window_that_cannot_be_read_back_fails_only_its_request(real, corpus, run, monkeypatch):
    """An I/O error reading one request's PCM file (EIO) is that request's 503; its batch mates are decoded."""
    gate = Gate()
    r = run(Wrapped(real, gate))
    read_audio = Window.audio
    broken: set[str] = set()

    def audio(window, source):
        if str(source.path) in broken:
            raise OSError(5, "Input/output error")
        return read_audio(window, source)

    monkeypatch.setattr(Window, "audio", audio)
    blocker, bad, good = _two_queued_behind_a_call(r, gate, corpus)
    broken.add(str(bad.audio.path))
    gate.open_all()
    blocker.wait(600)
    result = outcome(bad)
    assert isinstance(result, ServiceFaultError) and "Input/output error" in str(result), result
    assert_own_text([outcome(good)], [corpus[1]])
    assert r.scheduler.health.ok
