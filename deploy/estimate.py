"""What a workload costs in each inference mode, from a measured capacity and a dated price.

``whisper-deploy estimate`` parses its flags in :mod:`deploy.cli`; the arithmetic is here,
pure (no AWS call), so that the tests pin it:

- **capacity** comes from the benchmarks' JSON (:func:`capacity_from_bench`): audio seconds
  per wall second that one instance serves from concurrent clients (``bench/throughput.py``),
  the speed of one long file, and the live sessions one instance holds in real time
  (``bench/live.py``);
- **instances at peak**: the peak streams (each one audio second per second) over that
  capacity, at the utilisation autoscaling keeps (real-time), or over the sessions held (live);
- **instance-hours a month**: real-time and live keep at least one instance all month
  (:data:`HOURS_PER_MONTH`) and add what the audio needs above it; async scales to zero and
  bills the work plus, at each start, the start-up and the idle time before scale-in; batch
  bills the work plus each job's start-up;
- a mode **fits** a workload when it answers as soon as needed and takes its longest file
  (payload and time limits, :mod:`deploy.limits`); the **recommendation** is the cheapest that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from . import limits
from .prices import HOSTED, HostedPrice

HOURS_PER_MONTH = 730.0  # AWS's own monthly figure: 24 x 365 / 12

NEEDS = ("live", "interactive", "minutes", "overnight")
"""How soon the words are needed: as spoken; seconds after the file; minutes; by the next day."""

REALTIME = "real-time"
STREAMED = "real-time streamed"
LIVE = "live (bidirectional)"
ASYNC = "async"
BATCH = "batch transform"
MODES = (REALTIME, STREAMED, LIVE, ASYNC, BATCH)

# The soonest need each mode meets (an index into NEEDS): async answers in minutes (a queue,
# S3, and minutes to start an instance from zero); batch when its job ends.
_SOONEST = {REALTIME: 1, STREAMED: 1, LIVE: 0, ASYNC: 2, BATCH: 3}
_WHEN = {"live": "as spoken", "interactive": "in seconds", "minutes": "in minutes", "overnight": "when its job ends"}


class EstimateError(ValueError):
    """Inputs the estimate cannot use: the CLI prints it as a usage error (exit 2)."""


@dataclass(frozen=True)
class Capacity:
    """What one instance does, as measured."""

    realtime_rtf: float  # audio s per wall s, short requests from concurrent clients
    file_rtf: float  # audio s per wall s of one long file, alone
    live_sessions: Optional[int]  # live sessions held in real time; None: not measured
    device: str  # where it was measured: cpu, cuda, or unknown
    source: str


@dataclass(frozen=True)
class Workload:
    audio_hours: float  # a month
    peak_streams: float  # concurrent streams at peak, each one audio second per second
    need: str  # one of NEEDS
    file_minutes: float  # the longest file (or live turn) sent at once
    bitrate_kbps: float  # its encoding, for the payload limits


@dataclass(frozen=True)
class Assumptions:
    hosting_price: float  # $ per instance-hour, real-time, live and async
    batch_price: float  # $ per instance-hour, batch transform
    utilization: float = 0.7  # of capacity that real-time autoscaling keeps busy
    starts_per_month: int = 30  # async scale-ups from zero, batch jobs
    start_minutes: float = 10.0  # billed per start before work: instance, image, model load
    scale_in_minutes: float = 15.0  # async: billed idle after the backlog empties


@dataclass(frozen=True)
class ModeEstimate:
    mode: str
    instances_at_peak: int
    instance_hours: float
    monthly_usd: float
    per_audio_hour: float
    unfit: Optional[str]  # why the mode does not fit the workload; None: it fits


@dataclass(frozen=True)
class HostedEstimate:
    name: str
    per_audio_hour: float
    monthly_usd: float
    source: str


@dataclass(frozen=True)
class Estimate:
    modes: tuple[ModeEstimate, ...]
    hosted: tuple[HostedEstimate, ...]
    recommended: Optional[str]


# ---- inputs ---------------------------------------------------------------------------------


def capacity_from_bench(throughput: Optional[dict], live: Optional[list], backend: Optional[str] = None,
                        rtf: Optional[float] = None, live_sessions: Optional[int] = None,
                        file_rtf: Optional[float] = None) -> Capacity:
    """Capacity from ``bench/throughput.py run --json`` and ``bench/live.py --json`` output,
    any part overridden by a figure measured elsewhere (``rtf``: short requests from concurrent
    clients; ``file_rtf``: a long file alone, default ``rtf``; ``live_sessions``)."""
    try:
        return _capacity(throughput, live, backend, rtf, live_sessions, file_rtf)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, EstimateError):
            raise
        raise EstimateError(f"a bench file is not bench/throughput.py or bench/live.py --json output "
                            f"({type(error).__name__}: {error})") from error


def _capacity(throughput, live, backend, rtf, live_sessions, file_override) -> Capacity:
    device, sources = "unknown", []
    realtime_rtf = file_rtf = rtf
    if throughput is not None:
        rows = throughput.get("rows") if isinstance(throughput, dict) else None
        if not rows:
            raise EstimateError("the throughput file has no rows: is it bench/throughput.py run --json output?")
        servers = [row["server"] for row in rows if "server" in row]
        if backend is not None:
            servers = [s for s in servers if s.get("backend") == backend]
        if not servers:
            raise EstimateError(f"the throughput file has no server results for backend {backend!r}")
        server = servers[0]
        loads = {f"{n} clients": float(v) for n, v in server.get("concurrent_rtf", {}).items()}
        loads["one by one"] = float(server["seq_rtf"])
        best = max(loads, key=loads.get)
        if rtf is None:
            device = str(throughput.get("device", "unknown"))
            realtime_rtf, file_rtf = loads[best], float(server.get("long_rtf") or server["seq_rtf"])
            sources.append(f"bench/throughput.py, {server['backend']} on {device}: {realtime_rtf:.1f} "
                           f"audio s/s at {best}, a long file alone {file_rtf:.1f}")
    if rtf is not None:
        sources.append(f"--rtf {rtf:g}")
    if realtime_rtf is None:
        raise EstimateError("give a throughput bench file (--bench) or --rtf")
    if file_override is not None:
        file_rtf = file_override
        sources.append(f"--file-rtf {file_override:g}")
    if realtime_rtf <= 0 or file_rtf <= 0:
        raise EstimateError("a real-time factor must be above 0")

    held = live_sessions
    if held is None and live is not None:
        held = _sessions_held(live)
        sources.append(f"bench/live.py: {held} sessions held real time in every round")
    elif held is not None:
        sources.append(f"--live-sessions {held}")
    if held is not None and held < 1:
        raise EstimateError("live sessions per instance must be at least 1")
    return Capacity(realtime_rtf, file_rtf, held, device, "; ".join(sources))


def _sessions_held(rows: list) -> int:
    """The most concurrent sessions that every round of the short stream held all of; 0: none."""
    if not isinstance(rows, list) or not rows:
        raise EstimateError("the live file has no rows: is it bench/live.py --json output?")
    by_count: dict[int, bool] = {}
    for row in rows:
        if row.get("kind", "short") != "short":
            continue
        count = int(row["sessions"])
        by_count[count] = by_count.get(count, True) and int(row["held"]) == count
    held = [count for count, all_held in by_count.items() if all_held]
    if not held:
        raise EstimateError("in the live file no session count held real time (one session fell behind: "
                            "a machine too busy or too small)")
    return max(held)


def check_workload(workload: Workload) -> None:
    if workload.need not in NEEDS:
        raise EstimateError(f"--need must be one of {', '.join(NEEDS)}")
    for name, value in (("--audio-hours", workload.audio_hours), ("--peak-streams", workload.peak_streams),
                        ("--file-minutes", workload.file_minutes), ("--bitrate-kbps", workload.bitrate_kbps)):
        if not value > 0:
            raise EstimateError(f"{name} must be above 0, got {value:g}")
    average = workload.audio_hours / HOURS_PER_MONTH
    if average > workload.peak_streams:
        raise EstimateError(f"{workload.audio_hours:g} audio hours a month is {average:.2f} streams on average, "
                            f"more than --peak-streams {workload.peak_streams:g}")


def check_assumptions(a: Assumptions) -> None:
    if not (a.hosting_price > 0 and a.batch_price > 0):
        raise EstimateError("prices must be above 0")
    if not 0 < a.utilization <= 1:
        raise EstimateError(f"--utilization must be in (0, 1], got {a.utilization:g}")
    if a.starts_per_month < 1 or a.start_minutes < 0 or a.scale_in_minutes < 0:
        raise EstimateError("--starts-per-month must be at least 1; start and scale-in minutes at least 0")


# ---- the estimate ---------------------------------------------------------------------------


def estimate(workload: Workload, capacity: Capacity, assumptions: Assumptions,
             hosted: tuple[HostedPrice, ...] = HOSTED) -> Estimate:
    check_workload(workload)
    check_assumptions(assumptions)
    w, c, a = workload, capacity, assumptions
    month = HOURS_PER_MONTH
    work_short = w.audio_hours / c.realtime_rtf  # instance-hours of transcription, requests batched
    work_files = w.audio_hours / c.file_rtf  # one file at a time (async, batch: one per instance)
    starts = a.starts_per_month

    modes = []
    realtime_peak = _at_least_one(w.peak_streams / (c.realtime_rtf * a.utilization))
    realtime_hours = min(month * realtime_peak, max(month, work_short / a.utilization))
    for mode in (REALTIME, STREAMED):
        modes.append(_mode(mode, realtime_peak, realtime_hours, a.hosting_price, w, c))

    if c.live_sessions:
        live_peak = _at_least_one(w.peak_streams / c.live_sessions)
        live_hours = min(month * live_peak, max(month, w.audio_hours / c.live_sessions))
        modes.append(_mode(LIVE, live_peak, live_hours, a.hosting_price, w, c))
    else:
        modes.append(ModeEstimate(LIVE, 0, 0.0, math.nan, math.nan, "no live capacity measured (--live-bench)"))

    async_peak = _at_least_one(w.peak_streams / c.file_rtf)
    async_hours = min(month * async_peak, work_files + starts * (a.start_minutes + a.scale_in_minutes) / 60)
    modes.append(_mode(ASYNC, async_peak, async_hours, a.hosting_price, w, c))

    batch_hours = work_files + starts * a.start_minutes / 60
    modes.append(_mode(BATCH, 1, batch_hours, a.batch_price, w, c))

    fitting = [m for m in modes if m.unfit is None]
    # ties go to the earlier mode in MODES: the simpler call, the sooner answer
    recommended = min(fitting, key=lambda m: round(m.monthly_usd, 2)).mode if fitting else None
    hosted_rows = tuple(HostedEstimate(h.name, 60 * h.per_minute, 60 * h.per_minute * w.audio_hours, h.source)
                        for h in hosted)
    return Estimate(tuple(modes), hosted_rows, recommended)


def _at_least_one(instances: float) -> int:
    # 1e-9: 2.0000000001 instances from float division is 2, not 3
    return max(1, math.ceil(instances - 1e-9))


def _mode(mode: str, peak: int, hours: float, price: float, w: Workload, c: Capacity) -> ModeEstimate:
    monthly = hours * price
    return ModeEstimate(mode, peak, hours, monthly, monthly / w.audio_hours, unfit(mode, w, c))


def unfit(mode: str, w: Workload, c: Capacity) -> Optional[str]:
    """Why ``mode`` cannot serve the workload (too slow to answer, file too large or too long); None: it can."""
    need = NEEDS.index(w.need)
    if mode == LIVE:
        return None if w.need == "live" else "live sessions are for audio as it is spoken"
    if w.need == "live":
        return "answers after the audio is sent, not as it is spoken"
    if _SOONEST[mode] > need:
        return f"answers {_WHEN[NEEDS[_SOONEST[mode]]]}, not {_WHEN[w.need]}"
    payload = w.file_minutes * 60 * w.bitrate_kbps * 1000 / 8
    seconds = w.file_minutes * 60 / c.file_rtf
    if mode in (REALTIME, STREAMED):
        payload_max, time_max = limits.REALTIME_PAYLOAD_MAX, limits.REALTIME_RESPONSE_S
    elif mode == ASYNC:
        payload_max, time_max = limits.ASYNC_PAYLOAD_MAX, limits.ASYNC_INVOCATION_TIMEOUT_RANGE[1]
    else:
        payload_max, time_max = limits.MAX_PAYLOAD_RANGE[1] * 1024 * 1024, limits.INVOCATIONS_TIMEOUT_RANGE[1]
    if payload > payload_max:
        return f"a {w.file_minutes:g} min file is {payload / 1e6:.0f} MB, over {payload_max / 1024 / 1024:.0f} MB"
    if seconds > time_max:
        return f"a {w.file_minutes:g} min file takes {seconds:.0f} s, over {time_max} s"
    return None


# ---- the report -----------------------------------------------------------------------------


def report(est: Estimate, workload: Workload, capacity: Capacity, assumptions: Assumptions,
           instance_type: str, price_notes: list[str]) -> str:
    w, a = workload, assumptions
    lines = [f"Workload: {w.audio_hours:g} audio hours a month, {w.peak_streams:g} streams at peak, "
             f"words needed: {w.need}, longest file {w.file_minutes:g} min at {w.bitrate_kbps:g} kbps",
             f"Instance: {instance_type}, ${a.hosting_price:.4g}/h hosting, ${a.batch_price:.4g}/h batch",
             f"Capacity: {capacity.source}"]
    lines += [f"Note: {note}" for note in price_notes]
    if capacity.device == "cpu" and not instance_type.startswith(("ml.c", "ml.m", "ml.r", "ml.t")):
        lines.append(f"Note: capacity was measured on a CPU; {instance_type} has an accelerator: "
                     "run the benches there for figures that hold")
    lines += ["", "| mode | instances at peak | instance-hours a month | $ a month | $ per audio hour | fits |",
              "|---|---|---|---|---|---|"]
    for m in est.modes:
        if math.isnan(m.monthly_usd):
            lines.append(f"| {m.mode} | - | - | - | - | no: {m.unfit} |")
            continue
        lines.append(f"| {m.mode} | {m.instances_at_peak} | {m.instance_hours:,.1f} | {m.monthly_usd:,.2f} | "
                     f"{m.per_audio_hour:,.3f} | {'yes' if m.unfit is None else 'no: ' + m.unfit} |")
    for h in est.hosted:
        lines.append(f"| {h.name} (hosted) | - | - | {h.monthly_usd:,.2f} | {h.per_audio_hour:,.3f} | - |")
    lines.append("")
    if est.recommended is None:
        lines.append("Recommendation: no SageMaker mode fits; see each mode's reason.")
    else:
        best = next(m for m in est.modes if m.mode == est.recommended)
        lines.append(f"Recommendation: {best.mode}, ${best.monthly_usd:,.2f} a month "
                     f"(${best.per_audio_hour:,.3f} per audio hour), the cheapest mode that fits.")
    lines.append(f"Assumed: real-time autoscaling that follows the load at {a.utilization:.0%} of capacity, at least "
                 "1 instance (traffic in bursts bills more); "
                 f"{a.starts_per_month} async scale-ups or batch jobs a month, each billing {a.start_minutes:g} min "
                 f"to start (async also {a.scale_in_minutes:g} min idle before scale-in); streamed responses "
                 f"held to the 6 MB and {limits.REALTIME_RESPONSE_S} s of InvokeEndpoint.")
    return "\n".join(lines)
