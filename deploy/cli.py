"""``whisper-deploy`` / ``python -m deploy``: one CLI from image to transcript.

Flags are parsed here and nothing else: every flag is documented once, in its
argparse help; the work is in :mod:`deploy.flows`. Results (URIs, transcripts) go
to stdout, progress to stderr, so the commands compose in shell scripts
(build_and_push.sh reads the image URI from ``ecr-repository``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from . import capacity, flows, limits, monitoring, prices
from . import estimate as est
from . import requests as rq
from .aws import Executor, PartialFailure, WaitError

DEFAULT_INSTANCE = "ml.g5.xlarge"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _json_file(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error}") from error


def _wait_flags(poll: float) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--no-wait", action="store_true", help="return once the request is accepted")
    parent.add_argument("--poll", type=float, default=poll, help=f"seconds between status checks (default {poll:g})")
    parent.add_argument("--wait-timeout", type=float, default=3600.0,
                        help="give up waiting after this many seconds (default 3600)")
    return parent


def _hosting_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--name", required=True, help="endpoint name (1-63 chars, letters, digits, hyphens)")
    parent.add_argument("--model", required=True, help="SageMaker model name (from create-model)")
    parent.add_argument("--config-name", help="endpoint config name (default: NAME-<UTC timestamp>, so NAME "
                        "may be at most 48 characters; a fresh name lets an existing endpoint be updated)")
    parent.add_argument("--instance-type", default=DEFAULT_INSTANCE, help=f"default {DEFAULT_INSTANCE} (one A10G GPU)")
    parent.add_argument("--instance-count", type=int, default=1, help="InitialInstanceCount, at least 1 (default 1)")
    parent.add_argument("--startup-timeout", type=int, default=600,
                        help="ContainerStartupHealthCheckTimeoutInSeconds, 60-3600 (default 600): model load "
                             "and warm-up must finish before /ping answers")
    parent.add_argument("--download-timeout", type=int, default=600,
                        help="ModelDataDownloadTimeoutInSeconds, 60-3600 (default 600)")
    parent.add_argument("--max-instances", type=int,
                        help="enable autoscaling up to this many instances (MaxCapacity)")
    return parent


def _monitoring_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("alarms and dashboard (CloudWatch)")
    g.add_argument("--alarms", action="store_true",
                   help="create CloudWatch alarms: 5xx rate, p99 ModelLatency, queued audio per worker; "
                        "async also the age of the oldest queued request (cleanup deletes them)")
    g.add_argument("--alarm-sns-topic", action="append", default=[], metavar="ARN",
                   help="SNS topic notified when an alarm fires and when it clears (repeatable)")
    g.add_argument("--alarm-5xx-percent", type=float, default=1.0,
                   help="alarm when more than this %% of answers are 5xx in 3 of 5 minutes (default 1)")
    g.add_argument("--alarm-p99-latency", type=float, metavar="SECONDS",
                   help="alarm when p99 ModelLatency is above this in 3 of 5 minutes "
                        "(default 30 real-time: half InvokeEndpoint's 60 s; 1800 async)")
    g.add_argument("--alarm-queued-audio", type=float, default=120.0, metavar="SECONDS",
                   help="alarm when a worker holds more than this much audio queued (EMF QueuedAudioSeconds, "
                        "Maximum) ... (default 120)")
    g.add_argument("--alarm-queued-minutes", type=int, default=5, metavar="M",
                   help="... for M minutes in a row (default 5)")
    g.add_argument("--alarm-backlog-age", type=float, default=900.0, metavar="SECONDS",
                   help="async: alarm when the oldest queued request (ApproximateAgeOfOldestRequest) is older "
                        "than this for 5 minutes (default 900)")
    g.add_argument("--dashboard", action="store_true",
                   help="create the CloudWatch dashboard whisper-NAME: SageMaker's metrics and the container's")
    g.add_argument("--metrics-namespace", default=monitoring.DEFAULT_NAMESPACE,
                   help="CloudWatch namespace of the container's EMF metrics, as set by WHISPER_METRICS_NAMESPACE "
                        f"(default {monitoring.DEFAULT_NAMESPACE})")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whisper-deploy",
        description="Deploy the Whisper container to SageMaker and transcribe with it: real-time, batch, async.")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile's)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each API request as one JSON line (service, operation, params); call nothing")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("account", help="print the AWS account id (STS GetCallerIdentity)")

    p = sub.add_parser("ecr-repository", help="create the ECR repository if missing; print the image URI")
    p.add_argument("repository", help="ECR repository name")
    p.add_argument("--tag", default="latest", help="image tag (default latest)")

    sub.add_parser("ecr-login-password", help="print an ECR password for `docker login --password-stdin`")

    p = sub.add_parser("upload", help="upload a file (model.tar.gz) to S3; print its s3:// URI")
    p.add_argument("file")
    p.add_argument("s3_uri", help="s3://bucket/key, or s3://bucket/prefix/ to keep the file name")

    p = sub.add_parser("create-model", help="register the image + model data as a SageMaker model")
    p.add_argument("--name", required=True, help="model name (1-63 chars)")
    p.add_argument("--image", required=True, help="ECR image URI (from build_and_push.sh)")
    p.add_argument("--role", required=True, help="execution role ARN SageMaker assumes (ECR pull, S3 read/write)")
    p.add_argument("--model-data", help="s3://.../model.tar.gz; omitted: the image's baked or embedded model")
    p.add_argument("--backend", default="auto", choices=("auto", "openai", "transformers", "ctranslate2"),
                   help="WHISPER_BACKEND (default auto: chosen from the model files)")
    p.add_argument("--chunk-length-s", type=float, help="WHISPER_CHUNK_LENGTH_S")
    p.add_argument("--max-batch", type=int, help="WHISPER_MAX_BATCH (windows per engine call)")
    p.add_argument("--language", help="WHISPER_LANGUAGE default language (e.g. en)")
    p.add_argument("--compute-type", help="WHISPER_COMPUTE_TYPE (float16, int8_float16, ...)")
    p.add_argument("--workers", type=int, help="SAGEMAKER_MODEL_SERVER_WORKERS")
    p.add_argument("--server-timeout", type=int, help="SAGEMAKER_MODEL_SERVER_TIMEOUT seconds per request")
    p.add_argument("--env", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="extra container environment (repeatable; at most 100 entries in all)")

    p = sub.add_parser("realtime", parents=[_hosting_flags(), _wait_flags(30), _monitoring_flags()],
                       help="endpoint config + endpoint; wait for InService; optional autoscaling, alarms, dashboard")
    g = p.add_argument_group("autoscaling (with --max-instances)")
    g.add_argument("--min-instances", type=int, default=1, help="autoscaling MinCapacity, at least 1 (default 1)")
    g.add_argument("--scale-on", choices=capacity.SIGNALS, default="invocations",
                   help="the signal autoscaling tracks. invocations: SageMakerVariantInvocationsPerInstance "
                        "(per minute; blind to length: one invocation is 3 s or 30 min of audio). concurrency: "
                        "SageMaker's high-resolution ConcurrentRequestsPerModel (requests in flight per "
                        "instance, every 10 s; follows the work whatever its length). queued-audio: the "
                        "container's EMF QueuedAudioSeconds, Average per worker (what the scheduler knows is "
                        "waiting). The last two need --target or --target-from (default invocations)")
    g.add_argument("--target", type=float,
                   help="the target for --scale-on's signal, from a measured capacity: concurrency = the clients "
                        "at which `make bench` throughput stops growing; queued-audio = instance throughput "
                        "(audio s/s) x the wait you accept / workers per instance")
    g.add_argument("--target-from", metavar="FILE",
                   help='read the target: {"metric": SIGNAL, "target": N}, or the JSON of '
                        "`bench/throughput.py run --json FILE` run on this instance type (see deploy/capacity.py)")
    g.add_argument("--bench-backend", help="the row of a bench file with several backends (e.g. ctranslate2)")
    g.add_argument("--max-wait", type=float, default=10.0, metavar="SECONDS",
                   help="queued-audio from a bench file: the wait for queued audio you accept (default 10)")
    g.add_argument("--workers-per-instance", type=int, default=1,
                   help="queued-audio from a bench file: gunicorn workers per instance, one per GPU (default 1)")
    g.add_argument("--target-invocations", type=float, default=10.0,
                   help="SageMakerVariantInvocationsPerInstance target, per minute (default 10), for --scale-on "
                        "invocations without --target")

    p = sub.add_parser("async", parents=[_hosting_flags(), _wait_flags(30), _monitoring_flags()],
                       help="async endpoint (S3 in/out, SNS); optional autoscaling 0..N on backlog, alarms, "
                            "dashboard")
    p.add_argument("--output", required=True, help="S3OutputPath for results (s3://bucket/prefix)")
    p.add_argument("--failure", required=True, help="S3FailurePath for errors (s3://bucket/prefix)")
    p.add_argument("--success-topic", help="SNS topic ARN notified on success")
    p.add_argument("--error-topic", help="SNS topic ARN notified on failure")
    p.add_argument("--max-concurrent", type=int, default=1,
                   help="MaxConcurrentInvocationsPerInstance, 1-1000 (default 1: one GPU, one transcription)")
    p.add_argument("--min-instances", type=int, default=0, help="autoscaling MinCapacity (default 0: scale to zero)")
    p.add_argument("--target-backlog", type=float, default=5.0,
                   help="ApproximateBacklogSizePerInstance target (default 5 queued requests)")

    p = sub.add_parser("batch", parents=[_wait_flags(60)],
                       help="transform job over an S3 prefix; wait; print the .out URIs")
    p.add_argument("--name", required=True, help="transform job name (1-63 chars, unique per region)")
    p.add_argument("--model", required=True, help="SageMaker model name")
    p.add_argument("--input", required=True, help="s3://bucket/prefix holding one audio file per object")
    p.add_argument("--output", required=True, help="s3://bucket/prefix for <file>.out transcripts")
    p.add_argument("--accept", default="application/json", choices=limits.ACCEPT_TYPES,
                   help="output format of each .out (default application/json)")
    p.add_argument("--content-type", help="ContentType sent with every file (default: none, ffmpeg sniffs)")
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE, help=f"default {DEFAULT_INSTANCE}")
    p.add_argument("--instance-count", type=int, default=1, help="default 1")
    p.add_argument("--max-payload-mb", type=int, default=100,
                   help="MaxPayloadInMB, 0-100 (default 100): the largest audio file accepted")
    p.add_argument("--max-concurrent", type=int, default=1,
                   help="MaxConcurrentTransforms; times --max-payload-mb at most 100 (default 1)")
    p.add_argument("--invocation-timeout", type=int, default=3600,
                   help="InvocationsTimeoutInSeconds per file, 1-3600 (default 3600)")
    p.add_argument("--retries", type=int, default=1, help="InvocationsMaxRetries, 0-3 (default 1)")
    p.add_argument("--env", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="job environment overriding the model's (repeatable; at most 16)")

    p = sub.add_parser("invoke", help="real-time: send one file (at most 6 MB), print the transcript")
    _invoke_flags(p)

    p = sub.add_parser("invoke-async", parents=[_wait_flags(10)],
                       help="async: upload one file (at most 1 GB), invoke, poll S3 for the transcript")
    _invoke_flags(p)
    p.add_argument("--input-prefix", required=True, help="s3://bucket/prefix where the input file is uploaded")
    p.add_argument("--invocation-timeout", type=int, help="InvocationTimeoutSeconds, 1-3600")
    p.add_argument("--request-ttl", type=int, help="RequestTTLSeconds a queued request may wait, 60-21600")

    p = sub.add_parser("monitor", parents=[_monitoring_flags()],
                       help="alarms and/or dashboard for an endpoint that already runs")
    p.add_argument("--endpoint", required=True, help="endpoint name")
    p.add_argument("--async", dest="is_async", action="store_true",
                   help="the endpoint is async: backlog-age alarm and queue widgets instead of invocations")

    p = sub.add_parser("cleanup", help="deregister scaling; delete endpoint, config, model (safe to repeat)")
    p.add_argument("--endpoint", help="endpoint to delete (its config and model are found from it)")
    p.add_argument("--config", help="endpoint config to delete (when the endpoint is already gone)")
    p.add_argument("--model", help="model to delete (when endpoint and config are already gone)")
    p.add_argument("--transform-job", help="stop this transform job if still running; delete its model")
    p.add_argument("--delete-outputs", action="store_true",
                   help="also delete the async S3 output/failure prefixes and the transform job's output")
    p.add_argument("--s3-prefix", action="append", default=[], help="another s3:// prefix to empty (repeatable)")

    p = sub.add_parser("estimate", help="monthly cost of a workload in each mode, from bench results; calls nothing",
                       description="Instances at peak, $ per audio hour and $ a month for real-time, streamed, live, "
                                   "async and batch transform, from a measured capacity (bench/*.py --json) and the "
                                   f"dated price table in deploy/prices.py ({prices.REGION} on-demand, read "
                                   f"{prices.READ_ON}); and hosted APIs' price per audio hour beside them.")
    p.add_argument("--audio-hours", type=float, required=True, help="audio hours transcribed a month")
    p.add_argument("--peak-streams", type=float, required=True,
                   help="concurrent streams at peak, each one audio second per second (live: sessions)")
    p.add_argument("--need", choices=est.NEEDS, default="interactive",
                   help="how soon the words are needed: live (as spoken), interactive (seconds after the file, "
                        "the default), minutes, overnight")
    p.add_argument("--file-minutes", type=float, default=1.0, help="the longest file sent at once (default 1)")
    p.add_argument("--bitrate-kbps", type=float, default=64.0,
                   help="its encoding, for the payload limits (default 64: mp3 or m4a speech; 16 kHz WAV is 256)")
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE, help=f"default {DEFAULT_INSTANCE}")
    p.add_argument("--bench", type=_json_file, help="bench/throughput.py run --json output")
    p.add_argument("--backend", help="its row to use (default: the first)")
    p.add_argument("--live-bench", type=_json_file, help="bench/live.py --json output")
    p.add_argument("--rtf", type=float, help="audio seconds per wall second of one instance from concurrent "
                   "clients, instead of --bench")
    p.add_argument("--file-rtf", type=float, help="the same for one long file alone (default: --bench's, else --rtf)")
    p.add_argument("--live-sessions", type=int, help="live sessions one instance holds, instead of --live-bench")
    p.add_argument("--price-per-hour", type=float, help="hosting $ per instance-hour, instead of the table's")
    p.add_argument("--batch-price-per-hour", type=float,
                   help="batch transform $ per instance-hour (default: the table's, else the hosting price)")
    defaults = est.Assumptions(1.0, 1.0)
    p.add_argument("--utilization", type=float, default=defaults.utilization,
                   help=f"share of capacity real-time autoscaling keeps busy (default {defaults.utilization:g})")
    p.add_argument("--starts-per-month", type=int, default=defaults.starts_per_month,
                   help=f"async scale-ups from zero, batch jobs (default {defaults.starts_per_month})")
    p.add_argument("--start-minutes", type=float, default=defaults.start_minutes,
                   help=f"billed minutes per start before work (default {defaults.start_minutes:g}; not measured)")
    p.add_argument("--scale-in-minutes", type=float, default=defaults.scale_in_minutes,
                   help=f"async: billed idle minutes before scale-in (default {defaults.scale_in_minutes:g})")
    return parser


def _invoke_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, help="endpoint name")
    p.add_argument("file", help="audio file (any format ffmpeg reads) or a JSON request body")
    p.add_argument("--accept", default="application/json", choices=limits.ACCEPT_TYPES,
                   help="transcript format (default application/json)")
    p.add_argument("--content-type", help="default: from the file extension")
    p.add_argument("--attributes", help='CustomAttributes, e.g. "language=en;word_timestamps=true" (<= 1024 chars)')
    p.add_argument("--out", help="write the transcript here instead of stdout")


def _wait(args) -> flows.Wait:
    return flows.Wait(enabled=not args.no_wait, poll_s=args.poll, timeout_s=args.wait_timeout)


def _config_request(args, async_config: Optional[dict]) -> rq.Request:
    return rq.create_endpoint_config(
        args.config_name or flows.timestamped(args.name), args.model, args.instance_type, args.instance_count,
        args.startup_timeout, args.download_timeout, async_config)


def _watch(args) -> Optional[monitoring.Monitoring]:
    if not (args.alarms or args.dashboard):
        return None
    return monitoring.Monitoring(
        alarms=args.alarms, dashboard=args.dashboard, namespace=args.metrics_namespace,
        topics=tuple(args.alarm_sns_topic),
        thresholds=monitoring.Thresholds(
            error_percent=args.alarm_5xx_percent, p99_latency_s=args.alarm_p99_latency,
            queued_audio_s=args.alarm_queued_audio, queued_minutes=args.alarm_queued_minutes,
            backlog_age_s=args.alarm_backlog_age))


def _realtime_scaling(args) -> Optional[flows.Scaling]:
    """The signal and its target; concurrency and queued-audio have no default target on purpose."""
    if args.max_instances is None:
        if args.scale_on != "invocations" or args.target is not None or args.target_from:
            raise limits.LimitError("--scale-on, --target and --target-from set up autoscaling: add --max-instances")
        return None
    if args.target is not None and args.target_from:
        raise limits.LimitError("give --target or --target-from, not both")
    if args.target_from:
        target = capacity.from_file(args.target_from, args.scale_on, args.bench_backend, args.max_wait,
                                    args.workers_per_instance)
        _log(f"scaling target {target.value:g} ({target.signal}): {target.reason}")
        value = target.value
    elif args.target is not None:
        value = args.target
    elif args.scale_on == "invocations":
        value = args.target_invocations
    else:
        raise limits.LimitError(f"--scale-on {args.scale_on} needs --target or --target-from: the target is what "
                                "one instance was measured to handle (see `make bench`), not a default")
    return flows.Scaling(args.min_instances, args.max_instances, value, args.scale_on, args.metrics_namespace)


def _emit(data: bytes, out: Optional[str]) -> None:
    if out:
        with open(out, "wb") as handle:
            handle.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def run(args, ex: Executor) -> None:
    """Dispatch one parsed command. In a dry run stdout carries only the request lines."""
    cmd = args.command

    def result(text: str) -> None:
        if not ex.dry_run:
            print(text)

    if cmd == "account":
        result(flows.account_id(ex))
    elif cmd == "ecr-repository":
        result(flows.ensure_repository(ex, args.repository, args.tag, _log))
    elif cmd == "ecr-login-password":
        password = flows.ecr_password(ex)
        if password:
            result(password)
    elif cmd == "upload":
        result(flows.upload(ex, args.file, args.s3_uri))
    elif cmd == "create-model":
        env = rq.model_environment(
            backend=args.backend, model_data=bool(args.model_data), chunk_length_s=args.chunk_length_s,
            max_batch=args.max_batch, language=args.language, compute_type=args.compute_type,
            workers=args.workers, timeout_s=args.server_timeout, extra=dict(args.env))
        result(flows.create_model(ex, rq.create_model(args.name, args.image, args.role, env, args.model_data)))
    elif cmd == "realtime":
        endpoint = flows.deploy_endpoint(ex, args.name, _config_request(args, None), _realtime_scaling(args),
                                         _wait(args), _log, _watch(args))
        result(json.dumps({k: endpoint.get(k) for k in ("EndpointName", "EndpointConfigName", "EndpointStatus")}))
    elif cmd == "async":
        async_config = rq.async_inference_config(args.output, args.failure, args.max_concurrent,
                                                 args.success_topic, args.error_topic)
        scaling = (flows.Scaling(args.min_instances, args.max_instances, args.target_backlog)
                   if args.max_instances is not None else None)
        endpoint = flows.deploy_endpoint(ex, args.name, _config_request(args, async_config), scaling,
                                         _wait(args), _log, _watch(args))
        result(json.dumps({k: endpoint.get(k) for k in ("EndpointName", "EndpointConfigName", "EndpointStatus")}))
    elif cmd == "batch":
        job = rq.create_transform_job(
            args.name, args.model, args.input, args.output, instance_type=args.instance_type,
            instance_count=args.instance_count, accept=args.accept, max_payload_mb=args.max_payload_mb,
            max_concurrent=args.max_concurrent, timeout_s=args.invocation_timeout, retries=args.retries,
            content_type=args.content_type, environment=dict(args.env))
        for uri in flows.run_batch(ex, job, _wait(args), _log):
            result(uri)
    elif cmd == "invoke":
        _emit(flows.invoke(ex, args.endpoint, args.file, args.accept, args.attributes, args.content_type), args.out)
    elif cmd == "invoke-async":
        location, body = flows.invoke_async(
            ex, args.endpoint, args.file, args.input_prefix, args.accept, args.attributes, args.content_type,
            args.invocation_timeout, args.request_ttl, _wait(args), _log)
        # Only a wait yields the transcript; without one --out would be an empty file.
        if _wait(args).enabled and not ex.dry_run and (body or args.out):
            _emit(body, args.out)
        else:
            result(location)
    elif cmd == "monitor":
        watch = _watch(args)
        if watch is None:
            raise limits.LimitError("monitor needs --alarms and/or --dashboard")
        flows.watch_endpoint(ex, limits.check_name("EndpointName", args.endpoint), args.is_async, watch, _log)
    elif cmd == "cleanup":
        if not (args.endpoint or args.config or args.model or args.transform_job):
            raise limits.LimitError("cleanup needs --endpoint, --config, --model or --transform-job")
        flows.cleanup(ex, args.endpoint, args.config, args.model, args.transform_job, args.delete_outputs,
                      args.s3_prefix, _log)


def estimate(args) -> str:
    """The estimate's report; :class:`deploy.estimate.EstimateError` for inputs it cannot use."""
    if not limits.INSTANCE_TYPE_PATTERN.match(args.instance_type):
        raise est.EstimateError(f"--instance-type must look like ml.<family>.<size>, got {args.instance_type!r}")
    listed = prices.INSTANCES.get(args.instance_type)
    hosting = args.price_per_hour if args.price_per_hour is not None else (listed.hosting if listed else None)
    if hosting is None:
        raise est.EstimateError(f"no {prices.REGION} price for {args.instance_type} in deploy/prices.py "
                                f"(read {prices.READ_ON}): give --price-per-hour")
    notes = ["hosting price from --price-per-hour" if args.price_per_hour is not None else
             f"prices: {prices.REGION} on-demand, read {prices.READ_ON} from {listed.source}"]
    batch = args.batch_price_per_hour if args.batch_price_per_hour is not None else (listed and listed.batch)
    if batch is None:
        batch = hosting
        notes.append("no batch transform price in the table: the hosting price is used")
    capacity = est.capacity_from_bench(args.bench, args.live_bench, backend=args.backend, rtf=args.rtf,
                                       live_sessions=args.live_sessions, file_rtf=args.file_rtf)
    workload = est.Workload(args.audio_hours, args.peak_streams, args.need, args.file_minutes, args.bitrate_kbps)
    assumptions = est.Assumptions(hosting, batch, args.utilization, args.starts_per_month, args.start_minutes,
                                  args.scale_in_minutes)
    result = est.estimate(workload, capacity, assumptions)
    return est.report(result, workload, capacity, assumptions, args.instance_type, notes)


def main(argv: Optional[Sequence[str]] = None, executor: Optional[Executor] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "estimate":  # arithmetic only: no session, no credentials, nothing sent
        try:
            print(estimate(args))
        except est.EstimateError as error:
            parser.error(f"estimate: {error}")
        return 0
    ex = executor or Executor(region=args.region, dry_run=args.dry_run)
    try:
        run(args, ex)
    except limits.LimitError as error:
        print(f"whisper-deploy: limit: {error}", file=sys.stderr)
        return 2
    except (WaitError, PartialFailure, ClientError, BotoCoreError, Boto3Error, FileNotFoundError) as error:
        # Boto3Error: e.g. S3UploadFailedError from upload_file, which wraps the ClientError
        print(f"whisper-deploy: error: {error}", file=sys.stderr)
        return 1
    return 0
