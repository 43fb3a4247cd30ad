"""Every setting of the container, read once from the environment.

One table: the fields of ``Settings``. Each one says, through ``setting()``,
the variable that sets it, what that variable takes, its default and why it
exists; ``from_env`` reads them all the same way. A value that does not read
(``WHISPER_WARMUP=flase``, ``WHISPER_MAX_BATCH=many``) stops the start with a
message naming the variable and what it takes: a typo must not quietly mean
the default. The README's settings table is printed from this table
(``python -m serve.settings``), and a test keeps the two equal.

Not pydantic-settings: it reads ``os.environ`` itself (``from_env`` takes any
mapping, which the tests use), decodes list variables as JSON, and would turn
``Settings`` into a model where ``dataclasses.replace`` and plain construction
no longer work; the parsing here is a handful of one-line readers.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .core.options import TranscribeOptions, parse_options
from .errors import InvalidParameterError

BACKENDS = ("auto", "openai", "transformers", "ctranslate2")
COMPUTE_TYPES = ("auto", "float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16",
                 "int8_bfloat16", "int16")
"""What ctranslate2 takes; the torch backends take float32, float16 and bfloat16 (checked when the model loads)."""
LOG_LEVELS = ("debug", "info", "warning", "error")
TRUE = ("true", "on", "yes", "1")
FALSE = ("false", "off", "no", "0")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
API_KEY = re.compile(r"^[\x21-\x7e]{16,}$")  # what fits in a header: printable ASCII, no spaces

RETIRED = {
    "WHISPER_BATCH_SIZE": "WHISPER_BATCH_SIZE is retired: the server batches windows of all concurrent requests "
                          "itself; set WHISPER_MAX_BATCH to bound an engine call",
    "WHISPER_WINDOW_SECONDS": "WHISPER_WINDOW_SECONDS is retired: condition_on_previous_text requests are now "
                              "decoded in Whisper's own 30 s windows, taking turns with the other requests",
}
"""Variables that once meant something: set, they stop the start rather than being ignored."""


# --- readers: a string from the environment -> a value, and what the variable takes, in words -----


@dataclass(frozen=True)
class Kind:
    read: Callable[[str], Any]
    """Raises ValueError for a value it cannot read (or InvalidParameterError with its own message)."""
    takes: str
    """What the variable takes, for the error message and the README."""


def flag() -> Kind:
    def read(raw: str) -> bool:
        value = raw.strip().lower()
        if value not in TRUE + FALSE:
            raise ValueError(raw)
        return value in TRUE
    return Kind(read, "true or false (also on/off, yes/no, 1/0)")


def choice(*allowed: str) -> Kind:
    def read(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(raw)
        return value
    return Kind(read, "one of " + ", ".join(allowed))


def integer(low: int, high: Optional[int] = None) -> Kind:
    def read(raw: str) -> int:
        value = int(raw.strip())
        if value < low or (high is not None and value > high):
            raise ValueError(raw)
        return value
    return Kind(read, f"an integer from {low} to {high}" if high is not None else f"an integer, at least {low}")


def number(low: float = 0.0, *, above: bool = False) -> Kind:
    """A finite number, at least ``low`` (more than ``low`` when ``above``)."""
    def read(raw: str) -> float:
        value = float(raw.strip())
        if value != value or value in (float("inf"), float("-inf")) or value < low or (above and value == low):
            raise ValueError(raw)
        return value
    return Kind(read, f"a number, {'above' if above else 'at least'} {low:g}")


def text() -> Kind:
    return Kind(str.strip, "text")


def path() -> Kind:
    return Kind(lambda raw: Path(raw.strip()), "a path")


def device() -> Kind:
    def read(raw: str) -> str:
        value = raw.strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(raw)
        return value
    return Kind(read, "auto, cpu, cuda or cuda:N")


def packing() -> Kind:
    boolean = flag()

    def read(raw: str) -> bool:
        if raw.strip().lower() == "auto":
            raise InvalidParameterError("WHISPER_PACKING=auto is retired: packing is now off unless set to on "
                                        "(WHISPER_PACKING=on), on every device", param="WHISPER_PACKING")
        return boolean.read(raw)
    return Kind(read, boolean.takes)


def s3_prefixes() -> Kind:
    """``s3://bucket`` or ``s3://bucket/prefix`` entries, separated by commas or spaces, kept as ``s3://bucket/prefix``
    without a trailing slash (``s3://bucket/`` for a whole bucket): a prefix matches whole path segments."""
    def read(raw: str) -> tuple[str, ...]:
        entries = []
        for entry in raw.replace(",", " ").split():
            if not entry.startswith("s3://"):
                raise ValueError(entry)
            bucket, _, prefix = entry[len("s3://"):].partition("/")
            prefix = prefix.strip("/")
            if not S3_BUCKET.match(bucket) or any(s in (".", "..") for s in prefix.split("/")):
                raise ValueError(entry)
            entries.append(f"s3://{bucket}/{prefix}")
        return tuple(entries)
    return Kind(read, "s3://bucket or s3://bucket/prefix entries, separated by commas or spaces")


def secret() -> Kind:
    def read(raw: str) -> str:
        if not API_KEY.match(raw):
            raise ValueError("(not shown)")
        return raw
    return Kind(read, "at least 16 printable ASCII characters without spaces (e.g. from `openssl rand -hex 32`)")


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knob:
    env: str
    kind: Kind
    doc: str
    also: tuple[str, ...] = ()
    """Other names read when ``env`` is unset."""
    shown: Optional[str] = None
    """The default as the README shows it, where the value itself depends on the machine."""
    secret: bool = False
    """Never echoed: not in errors, not in ``repr``."""

    def parse(self, name: str, raw: str) -> Any:
        try:
            return self.kind.read(raw)
        except InvalidParameterError:
            raise
        except ValueError:
            value = "" if self.secret else f"={raw!r}"
            raise InvalidParameterError(f"{name}{value} cannot be read: {name} takes {self.kind.takes}",
                                        param=name) from None


def setting(env: str, default: Any, kind: Kind, doc: str, *, also: tuple[str, ...] = (), shown: Optional[str] = None,
            secret: bool = False) -> Any:
    return field(default=default, repr=not secret,
                 metadata={"knob": Knob(env, kind, doc, also, shown, secret)})


@dataclass(frozen=True)
class Settings:
    model_dir: Path = setting(
        "WHISPER_MODEL_DIR", Path("/opt/ml/model"), path(), also=("SM_MODEL_DIR",),
        doc="where SageMaker extracts `model.tar.gz`. Empty or missing: the embedded tiny.en.")
    backend: str = setting(
        "WHISPER_BACKEND", "auto", choice(*BACKENDS),
        doc="the engine; `auto` picks from the files in the model directory and logs why")
    hf_model_id: Optional[str] = setting(
        "HF_MODEL_ID", None, text(),
        doc="a Hugging Face hub id for the transformers backend when the model directory is empty (needs network)")
    device: str = setting(
        "WHISPER_DEVICE", "auto", device(), doc="`auto` uses CUDA when present")
    compute_type: str = setting(
        "WHISPER_COMPUTE_TYPE", "auto", choice(*COMPUTE_TYPES),
        doc="auto: float16 on GPU, int8 (ctranslate2) / float32 (torch) on CPU; the torch backends take float32, "
            "float16 or bfloat16. The openai backend keeps float32 weights and runs float16 activations, as "
            "`whisper.transcribe(fp16=True)` does")
    cpu_threads: int = setting(
        "WHISPER_CPU_THREADS", 0, integer(0), doc="CPU inference threads; 0 = the worker's share of the cores")
    cache_dir: Path = setting(
        "WHISPER_CACHE_DIR", Path.home() / ".cache" / "whisper-sagemaker", path(), shown="`~/.cache/whisper-sagemaker`",
        doc="where the embedded default is converted for the openai / transformers backends, and the embedded "
            "speaker model exported to ONNX (once each; the image's build makes that export)")
    max_batch: int = setting(
        "WHISPER_MAX_BATCH", 0, integer(0, 256),
        doc="most 30 s windows (of all concurrent requests) in one engine call; 0 = measured: 16 on a GPU, 4 on a CPU")
    packing: bool = setting(
        "WHISPER_PACKING", False, packing(),
        doc="pack short windows of several requests into one 30 s engine window: faster on a CPU, but a request's "
            "words then depend on who else was speaking. Off unless set, on every device (`auto` is refused)")
    max_live_sessions: int = setting(
        "WHISPER_MAX_LIVE_SESSIONS", 0, integer(0, 1024),
        doc="live sessions (WebSocket) one worker holds at once; past it, or while its live sessions fall behind "
            "real time, a new one gets an `error` event and the close 1013 (Try Again Later). 0 = measured: "
            "4 on a CPU, 16 on a GPU")
    live_idle_s: float = setting(
        "WHISPER_LIVE_IDLE_S", 120.0, number(0, above=True),
        doc="a live session that sends nothing (no audio, no event) this long is closed (1008), after the "
            "`completed` of its open turn")
    live_max_session_s: float = setting(
        "WHISPER_LIVE_MAX_SESSION_S", 14400.0, number(0, above=True),
        doc="the longest a live session may last; it is then closed (1008) after the `completed` of its open turn")
    engine_timeout_s: float = setting(
        "WHISPER_ENGINE_TIMEOUT_S", 600.0, number(0, above=True),
        doc="an engine call running longer is hung: the worker turns unhealthy and `/ping` answers 503")
    decode_workers: int = setting(
        "WHISPER_DECODE_WORKERS", 0, integer(0, 256),
        doc="ffmpeg processes (and VAD passes) running at once; 0 = one per core, 2 to 8")
    max_audio_seconds: float = setting(
        "WHISPER_MAX_AUDIO_SECONDS", 4 * 3600.0, number(0),
        doc="the longest audio one request may decode (413 beyond), so a small body cannot buy hours of computing; "
            "0 = no limit")
    max_body_mb: float = setting(
        "WHISPER_MAX_BODY_MB", 0.0, number(0), doc="reject larger bodies (and S3 objects) with 413; 0 = no cap")
    max_json_mb: float = setting(
        "WHISPER_MAX_JSON_MB", 128.0, number(0, above=True),
        doc="a larger JSON body is refused with 413 from its Content-Length, before it is read: send big audio as "
            "the raw body or an `s3_uri`. Above batch transform's 100 MB `MaxPayloadInMB`, so no record of a "
            "transform job is refused; raw and multipart bodies are not capped by it")
    s3_allow: tuple[str, ...] = setting(
        "WHISPER_S3_ALLOW", (), s3_prefixes(), shown="none",
        doc="the S3 prefixes an `s3_uri` may name; none: `s3_uri` is refused. A prefix matches whole path "
            "segments, not as a string: `s3://b/calls` allows `calls/a.wav`, not `calls2/a.wav`. Anything "
            "else is refused before S3 is asked, with one answer whether or not the object exists")
    api_key: Optional[str] = setting(
        "WHISPER_API_KEY", None, secret(), secret=True,
        doc="when set, every route but `/ping` needs `Authorization: Bearer <key>` (401 otherwise; the `openai` "
            "client sends its `api_key` so). For direct runs (ECS, EKS, a laptop), where nothing else guards the "
            "port; on SageMaker IAM guards the endpoint and no such header arrives, so `whisper-deploy` refuses it")
    scratch_dir: Path = setting(
        "WHISPER_TMP_DIR", Path(tempfile.gettempdir()) / "whisper-scratch", path(), shown="`/tmp/whisper-scratch`",
        doc="request bodies and their decoded audio, one folder per request, removed when it ends; emptied at start "
            "and when a worker dies (use a folder of its own). Run as root, `www-data` (nginx's workers) must get "
            "through the folders above it")
    diarization: str = setting(
        "WHISPER_DIARIZATION", "auto", choice("auto", "embedded", "pyannote", "off"),
        doc="the speaker diarization engine for `diarize=true`: `auto` runs pyannote where the model artifact has a "
            "`diarization/` folder, else the embedded CAM++ model; `off` refuses `diarize` with a 400. Its model "
            "loads with a worker's first diarized request")
    warmup: bool = setting(
        "WHISPER_WARMUP", True, flag(),
        doc="transcribe a short spoken sentence shipped in the package (and check the words) before `/ping` "
            "turns 200")
    port: int = setting(
        "SAGEMAKER_BIND_TO_PORT", 8080, integer(1, 65535),
        doc="the port SageMaker sends traffic to (nginx listens there)")
    bind_host: str = setting(
        "WHISPER_BIND_HOST", "0.0.0.0", text(),
        doc="the address nginx listens on (local runs and tests use 127.0.0.1)")
    client_timeout: int = setting(
        "WHISPER_CLIENT_TIMEOUT_S", 60, integer(1, 3600),
        doc="a client silent this long mid-body, or slower than this to send its headers, is dropped: nginx "
            "closes the connection without an answer (it logs 408, never sends it) and nothing reaches gunicorn")
    server_threads: int = setting(
        "WHISPER_SERVER_THREADS", 64, integer(4, 1024),
        doc="connection threads per worker: each request waiting for its transcription holds one, so this bounds "
            "the requests a worker batches (nginx answers 503 beyond it, minus 8 kept for `/ping`)")
    workers: Optional[int] = setting(
        "SAGEMAKER_MODEL_SERVER_WORKERS", None, integer(1), shown="one per GPU, 1 on CPU",
        doc="gunicorn workers (each loads its own model)")
    timeout: int = setting(
        "SAGEMAKER_MODEL_SERVER_TIMEOUT", 3600, integer(1),
        doc="seconds a request may take (async inference allows 3600)")
    log_level: str = setting("WHISPER_LOG_LEVEL", "info", choice(*LOG_LEVELS), doc="the log's level")
    metrics: bool = setting(
        "WHISPER_METRICS", True, flag(),
        doc="record metrics: Prometheus at `GET /metrics` (all workers) and CloudWatch EMF lines in the log (README, "
            "\"Metrics\"); off: neither")
    metrics_namespace: str = setting(
        "WHISPER_METRICS_NAMESPACE", "WhisperSageMaker", text(), doc="the CloudWatch namespace of the EMF lines")
    metrics_interval_s: float = setting(
        "WHISPER_METRICS_INTERVAL_S", 60.0, number(0, above=True),
        doc="how often each worker writes its gauge line (queued windows and audio, memory, batches) and samples "
            "its memory")
    metrics_endpoint: str = setting(
        "WHISPER_METRICS_ENDPOINT", "local", text(),
        doc="the EMF lines' `EndpointName` dimension (SageMaker does not tell a container its endpoint's name: "
            "set it on the model, `whisper-deploy create-model ... --env WHISPER_METRICS_ENDPOINT=whisper-rt`)")
    metrics_variant: str = setting(
        "WHISPER_METRICS_VARIANT", "AllTraffic", text(), doc="the EMF lines' `VariantName` dimension")

    defaults: TranscribeOptions = field(default_factory=TranscribeOptions)
    """Default transcription options, from WHISPER_<OPTION> (``option_variables()``). A request's parameters
    override them."""

    def visible_gpus(self) -> list[str]:
        """GPU ids this container may use (CUDA_VISIBLE_DEVICES, else the driver's), found without initialising CUDA."""
        if self.device == "cpu":
            return []
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        if mask is not None:
            ids = [g.strip() for g in mask.split(",") if g.strip()]
            return [] if ids[:1] == ["-1"] else ids
        proc_gpus = glob.glob("/proc/driver/nvidia/gpus/*")
        if proc_gpus:
            return [str(i) for i in range(len(proc_gpus))]
        if shutil.which("nvidia-smi"):
            try:
                out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
                return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]
            except (OSError, subprocess.SubprocessError):
                pass
        return []

    @property
    def front_dir(self) -> Path:
        """nginx's files (configuration, buffered bodies) and gunicorn's socket, inside the scratch folder."""
        return self.scratch_dir / "front"

    @property
    def gunicorn_socket(self) -> Path:
        return self.front_dir / "gunicorn.sock"

    @property
    def metrics_dir(self) -> Path:
        """Every worker's Prometheus values (PROMETHEUS_MULTIPROC_DIR), inside the scratch folder: emptied at start."""
        return self.scratch_dir / "metrics"

    def worker_count(self) -> int:
        """Worker processes: SAGEMAKER_MODEL_SERVER_WORKERS, else one per GPU, 1 on CPU."""
        return self.workers or max(1, len(self.visible_gpus()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read every setting from ``environ`` (``os.environ`` by default); an empty variable is an unset one."""
        env = os.environ if environ is None else environ

        def get(name: str) -> Optional[str]:
            value = env.get(name)
            return None if value in (None, "") else value

        for name, why in RETIRED.items():
            if get(name) is not None:
                raise InvalidParameterError(why, param=name)
        if (v := get("HF_TASK")) is not None and v != "automatic-speech-recognition":
            raise InvalidParameterError(f"HF_TASK={v}: this container serves automatic-speech-recognition only",
                                        param="HF_TASK")
        values: dict[str, Any] = {}
        for f in fields(cls):
            knob: Optional[Knob] = f.metadata.get("knob")
            name = knob and next((n for n in (knob.env, *knob.also) if get(n) is not None), None)
            if name:
                values[f.name] = knob.parse(name, get(name))
        defaults = TranscribeOptions()
        for name, variable in option_variables().items():
            if (v := get(variable)) is not None:
                try:  # one at a time, so the error names the variable
                    defaults = parse_options({name: v}, source=variable)[0].merged_over(defaults)
                except InvalidParameterError as exc:
                    raise InvalidParameterError(f"{variable}: {exc.message}", param=variable) from None
        return cls(**values, defaults=defaults)


def option_variables() -> dict[str, str]:
    """Transcription option -> the variable that sets its default (``language`` -> ``WHISPER_LANGUAGE``)."""
    return {name: f"WHISPER_{name.upper()}" for name in TranscribeOptions.names()}


# --- the README's table ------------------------------------------------------------------------


def settings_table() -> str:
    """The README's settings table, from the fields above (``python -m serve.settings`` prints it)."""
    rows = ["| Variable | Default | Takes | Meaning |", "|---|---|---|---|"]

    def row(*cells: str) -> None:
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    for f in fields(Settings):
        knob: Optional[Knob] = f.metadata.get("knob")
        if knob is None:
            continue
        names = " (or ".join(f"`{n}`" for n in (knob.env, *knob.also)) + ")" * len(knob.also)
        row(names, knob.shown or _shown(f.default), knob.kind.takes, knob.doc)
    row(", ".join(f"`{v}`" for v in option_variables().values()), "–", "what the request parameter takes",
        "default transcription parameters; a request's parameters override them. Invalid values, or ones the "
        "model cannot honour, stop the container at start")
    row("`HF_TASK`", "–", "`automatic-speech-recognition`", "the Hugging Face toolkit's variable; another task "
        "stops the start")
    row("`CUDA_VISIBLE_DEVICES`", "all", "GPU ids", "which GPUs the container may use; workers are pinned among them")
    for name, why in RETIRED.items():
        reason = why.split(": ", 1)[1]
        row(f"`{name}`", "–", "nothing", f"retired, setting it stops the start: {reason}")
    return "\n".join(rows)


def _shown(default: Any) -> str:
    if default is None:
        return "–"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


if __name__ == "__main__":
    print(settings_table())
