"""gunicorn settings for the SageMaker serving container, all from ``serve.settings.Settings``.

Read by ``container/serve`` in the gunicorn master, before any worker forks.

- One worker per GPU, each pinned to its GPU (``post_fork``); 1 worker on CPU.
  ``SAGEMAKER_MODEL_SERVER_WORKERS`` overrides. The master writes the count it
  chose back to that variable, so every worker's Settings knows it.
- No ``preload_app``: each worker loads its own model after the fork, so CUDA
  is never initialised in the master (a CUDA context does not survive fork).
  For the same reason GPUs are counted without touching CUDA.
- ``gthread`` workers: one thread per connection, so /ping is answered while
  requests wait for their transcriptions (``WHISPER_SERVER_THREADS``).
- Request timeout ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (default 3600 s, what
  async inference allows); SIGTERM drains in-flight requests for 25 s; those left get a 503.
- Logs go to stdout; gunicorn's access log is off in favour of the app's
  one structured JSON line per invocation.
- The few malformed requests nginx passes on and gunicorn's parser refuses
  are answered in JSON, like every other error (``_json_error``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import gunicorn.util

from serve.http.app import worker_scratch
from serve.metrics import worker_gone
from serve.settings import Settings

settings = Settings.from_env()
GPUS = settings.visible_gpus()
# An explicit device (cuda:N) is the operator's choice: don't re-pin workers.
PIN_GPUS = bool(GPUS) and settings.device in ("auto", "cuda")

bind = f"unix:{settings.gunicorn_socket}"  # nginx (container/serve) listens on the port
workers = settings.worker_count()
os.environ["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
worker_class = "gthread"
threads = settings.server_threads
worker_connections = settings.server_threads + 8  # nginx bounds what reaches a worker; room for /ping
timeout = settings.timeout
graceful_timeout = 25  # SageMaker allows 30 s between SIGTERM and SIGKILL; leave room to exit
preload_app = False
# nginx refuses (as JSON) request lines over 8 kB and headers over 8 kB, and holds at most 32 kB of
# headers in all; gunicorn's limits are above nginx's, so they never answer (its default of 100
# header fields answered 431 to a valid request with 300 short headers)
limit_request_line = 16384
limit_request_field_size = 32768
limit_request_fields = 32768
accesslog = None
errorlog = "-"
loglevel = settings.log_level
capture_output = False
# gunicorn >= 24 opens a control socket at a fixed path; several servers on one host
# (tests, local runs) would fight over it, and the container has no use for it.
control_socket_disable = True

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"},
                   "bare": {"format": "%(message)s"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"},
        "events": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "bare"},
    },
    "root": {"level": settings.log_level.upper(), "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": settings.log_level.upper(), "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
        # One JSON object per line, nothing around it, so log tools can parse it.
        "serve.events": {"level": "INFO", "handlers": ["events"], "propagate": False},
        "serve.metrics.emf": {"level": "INFO", "handlers": ["events"], "propagate": False},  # CloudWatch EMF
    },
}


_GUNICORN_ERROR_TYPES = {400: "InvalidRequest", 414: "URITooLong", 431: "RequestHeaderFieldsTooLarge",
                         500: "InternalError", 501: "NotImplemented"}


def _json_error(sock, status_int, reason, mesg):
    """gunicorn's own error answers (a request its parser refuses) as JSON, like every other error.

    gunicorn writes these itself, before any application code runs, as an
    HTML page; nginx refuses most malformed requests first, but a few reach
    gunicorn (a request line with bytes that are not ASCII, for one).
    """
    kind = _GUNICORN_ERROR_TYPES.get(status_int) or "".join(reason.title().split())
    message = f"{mesg or reason}; nothing was transcribed" if status_int < 500 else "the server failed; see its logs"
    body = json.dumps({"error": {"type": kind, "message": message}}) + "\n"
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    gunicorn.util.write_nonblock(sock, (head + body).encode("latin-1"))


gunicorn.util.write_error = _json_error  # the workers are forked from this process: they inherit it


def child_exit(server, worker):
    """A worker ended (killed, crashed or stopped): its requests' files go with it, and its live gauges."""
    shutil.rmtree(worker_scratch(settings.scratch_dir, worker.pid), ignore_errors=True)
    worker_gone(worker.pid)


def post_worker_init(worker):
    """SIGTERM in a worker: requests that cannot finish before the drain ends get a 503 with Retry-After.

    gunicorn's own handler then stops accepting and waits ``graceful_timeout``
    for the requests in flight; without ours, those still running at the end
    would be cut off with no answer at all.
    """
    previous = signal.getsignal(signal.SIGTERM)
    runtime = worker.wsgi.extensions["whisper.runtime"]
    live = worker.wsgi.extensions.get("whisper.live")

    def drain(signo, frame):
        if live is not None:
            live.drain()  # each live session: its open turn's last pass, its completed, then a close (1000)
        runtime.shutdown(grace_s=graceful_timeout - 4)  # time for the engine call in flight to end
        worker.log.info("SIGTERM: worker %s refuses new requests (503); those in flight have %d s", worker.pid,
                        graceful_timeout - 4)
        if callable(previous):
            previous(signo, frame)

    signal.signal(signal.SIGTERM, drain)


def pre_fork(server, worker):
    """Give the new worker the lowest slot no live worker holds (a restarted worker reuses its GPU)."""
    taken = {getattr(w, "slot", None) for w in server.WORKERS.values()}
    worker.slot = next(i for i in range(len(taken) + 1) if i not in taken)


def post_fork(server, worker):
    """In the worker, before the app loads: see only our GPU, or share the CPU cores fairly."""
    slot = getattr(worker, "slot", 0)
    if PIN_GPUS:
        gpu = GPUS[slot % len(GPUS)]
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        os.environ["WHISPER_DEVICE"] = "cuda:0"
        server.log.info("worker %d (slot %d) pinned to GPU %s", worker.pid, slot, gpu)
    elif workers > 1 and not settings.cpu_threads:
        cores = len(os.sched_getaffinity(0))
        os.environ["WHISPER_CPU_THREADS"] = str(max(1, cores // workers))
