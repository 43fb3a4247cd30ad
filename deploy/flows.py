"""What each subcommand does, as sequences of requests sent through an Executor.

Why a separate layer: the CLI only parses flags; these functions build every
request first (so every limit is checked before the first call), then run them
in order, wait where the next step needs a state, and return what the user asked
for (a URI, a transcript, a list of outputs).
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import limits, monitoring
from . import requests as rq
from .aws import Executor, PartialFailure, WaitError, wait_for_status
from .content_types import content_type_for

Log = Callable[[str], None]

ENDPOINT_DONE = {"InService"}
ENDPOINT_FAILED = {"Failed", "OutOfService", "RollingBack"}


@dataclass(frozen=True)
class Wait:
    """Whether and how long to wait for a state; poll/timeout in seconds."""

    enabled: bool = True
    poll_s: float = 30.0
    timeout_s: float = 3600.0


@dataclass(frozen=True)
class Scaling:
    """Autoscaling of the AllTraffic variant. ``target`` is in the unit of ``signal``:
    invocations per instance per minute, requests in flight per instance (concurrency),
    seconds of audio queued per worker (queued-audio); async endpoints always track
    queued requests per instance. ``namespace``: where the container's EMF metrics land."""

    min_capacity: int
    max_capacity: int
    target: float
    signal: str = "invocations"
    namespace: str = monitoring.DEFAULT_NAMESPACE


def timestamped(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"


# --- image registry ----------------------------------------------------------------

def account_id(ex: Executor) -> str:
    return ex.call(rq.get_caller_identity()).get("Account", "<ACCOUNT>")


def ensure_repository(ex: Executor, name: str, tag: str, log: Log) -> str:
    """Create the ECR repository if missing; return the image URI for ``tag``."""
    limits.check_image_tag(tag)
    found = ex.exists(rq.describe_repository(name))
    if found:
        repository = found["repositories"][0]
    else:
        log(f"creating ECR repository {name}")
        repository = ex.call(rq.create_repository(name)).get("repository", {})
    uri = repository.get("repositoryUri") or f"<ACCOUNT>.dkr.ecr.{ex.region or '<REGION>'}.amazonaws.com/{name}"
    return f"{uri}:{tag}"


def ecr_password(ex: Executor) -> str:
    """The password half of ECR's "AWS:<password>" token, for docker login --password-stdin."""
    data = ex.call(rq.get_authorization_token()).get("authorizationData", [])
    if not data:
        return ""
    return base64.b64decode(data[0]["authorizationToken"]).decode().split(":", 1)[1]


# --- model --------------------------------------------------------------------------

def upload(ex: Executor, path: str, s3_uri: str) -> str:
    if s3_uri.endswith("/"):
        s3_uri += Path(path).name
    request = rq.upload_file(path, s3_uri)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    ex.call(request)
    return s3_uri


def create_model(ex: Executor, request: rq.Request) -> str:
    ex.call(request)
    return request.params["ModelName"]


# --- endpoints ----------------------------------------------------------------------

def scaling_requests(endpoint: str, scaling: Optional[Scaling], is_async: bool) -> list[rq.Request]:
    """Validated up front; the alarm is built later, once the step policy's ARN exists."""
    if scaling is None:
        return []
    steps = [rq.register_scalable_target(endpoint, scaling.min_capacity, scaling.max_capacity, allow_zero=is_async)]
    if is_async:
        steps += [rq.backlog_policy(endpoint, scaling.target), rq.scale_from_zero_policy(endpoint)]
    elif scaling.signal == "concurrency":
        steps.append(rq.concurrency_policy(endpoint, scaling.target))
    elif scaling.signal == "queued-audio":
        steps.append(rq.queued_audio_policy(endpoint, scaling.target, scaling.namespace))
    else:
        steps.append(rq.invocations_policy(endpoint, scaling.target))
    return steps


def deploy_endpoint(ex: Executor, name: str, config: rq.Request, scaling: Optional[Scaling],
                    wait: Wait, log: Log, watch: Optional[monitoring.Monitoring] = None) -> dict:
    """Create (or, if the endpoint exists, update to) ``config``; wait; apply autoscaling;
    then create the alarms and dashboard ``watch`` asks for."""
    is_async = "AsyncInferenceConfig" in config.params
    config_name = config.params["EndpointConfigName"]
    create = rq.create_endpoint(name, config_name)
    update = rq.update_endpoint(name, config_name)
    scale = scaling_requests(name, scaling, is_async)
    watching = monitoring.requests_for(name, ex.resolved_region(), is_async, watch)
    if scale and not wait.enabled:
        raise limits.LimitError("autoscaling can only be registered on an InService endpoint; drop --no-wait")

    existing = ex.exists(rq.describe_endpoint(name))
    if existing and existing.get("EndpointStatus") == "Failed":
        reason = existing.get("FailureReason", "no FailureReason given")
        raise WaitError(f"endpoint {name} is Failed ({reason}) and a Failed endpoint cannot be updated; "
                        f"run `cleanup --endpoint {name}` first, then deploy again")
    ex.call(config)
    if existing:
        log(f"endpoint {name} exists ({existing.get('EndpointStatus')}): updating it to {config_name}")
        deregister_scaling(ex, name)  # UpdateEndpoint is refused while a scalable target is registered
        ex.call(update)
    else:
        log(f"creating endpoint {name} with config {config_name}")
        ex.call(create)
    if not wait.enabled:
        _send(ex, watching, log)
        return {"EndpointName": name, "EndpointConfigName": config_name}

    def on_new_config(description: dict) -> bool:
        """InService counts only once the endpoint runs ``config_name``: right after UpdateEndpoint
        DescribeEndpoint may still show InService on the old config; after a failed update
        SageMaker rolls back to InService on the old config with a FailureReason."""
        if description.get("EndpointConfigName") == config_name:
            return True
        if existing and description.get("FailureReason"):
            raise WaitError(f"updating endpoint {name} to {config_name} failed; it is InService on "
                            f"{description.get('EndpointConfigName')} again: {description['FailureReason']}")
        return False

    description = wait_for_status(ex, rq.describe_endpoint(name), "EndpointStatus", ENDPOINT_DONE,
                                  ENDPOINT_FAILED, poll_s=wait.poll_s, timeout_s=wait.timeout_s, log=log,
                                  accept=on_new_config)
    for request in scale:
        response = ex.call(request)
        if request.params.get("PolicyType") == "StepScaling":
            arn = response.get("PolicyARN", "<PolicyARN returned by PutScalingPolicy>")
            ex.call(rq.backlog_alarm(name, arn))
    _send(ex, watching, log)
    return description or {"EndpointName": name, "EndpointConfigName": config_name}


def watch_endpoint(ex: Executor, endpoint: str, is_async: bool, watch: monitoring.Monitoring, log: Log) -> None:
    """Alarms and/or dashboard for an endpoint that already exists (``monitor``)."""
    _send(ex, monitoring.requests_for(endpoint, ex.resolved_region(), is_async, watch), log)


def _send(ex: Executor, requests: list[rq.Request], log: Log) -> None:
    for request in requests:
        log(f"{request.operation} {request.params.get('AlarmName') or request.params.get('DashboardName')}")
        ex.call(request)


def unwatch_endpoint(ex: Executor, endpoint: str) -> None:
    """Delete the alarms and dashboard ``watch_endpoint`` may have made; tolerant of missing.

    Only the alarms DescribeAlarms finds are named (all of them in a dry run, which
    sees none): the DeleteAlarms reference once said an unknown name made it delete
    none, today it says the known ones still go; naming the found ones is right under both."""
    found = ex.call(monitoring.describe_alarms(endpoint), missing_ok=True).get("MetricAlarms", [])
    names = monitoring.alarm_names(endpoint) if ex.dry_run else [a["AlarmName"] for a in found]
    if names:
        ex.call(monitoring.delete_alarms(names), missing_ok=True)
    ex.call(monitoring.delete_dashboard(endpoint), missing_ok=True)


def deregister_scaling(ex: Executor, endpoint: str) -> None:
    """Delete the variant's scaling policies and alarm, then its scalable target; all idempotent."""
    policies = ex.call(rq.describe_scaling_policies(endpoint), missing_ok=True).get("ScalingPolicies", [])
    for policy in policies:
        ex.call(rq.delete_scaling_policy(endpoint, policy["PolicyName"]), missing_ok=True)
    ex.call(rq.deregister_scalable_target(endpoint), missing_ok=True)
    ex.call(rq.delete_alarms(endpoint), missing_ok=True)


# --- batch ----------------------------------------------------------------------------

def run_batch(ex: Executor, job: rq.Request, wait: Wait, log: Log) -> list[str]:
    """Start the transform job; when waiting, return the s3:// URIs of its .out files."""
    params = job.params
    input_uri = params["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    if not ex.dry_run:
        _check_batch_inputs(ex, input_uri, params["MaxPayloadInMB"])
    ex.call(job)
    name = params["TransformJobName"]
    if not wait.enabled or ex.dry_run:
        return []
    wait_for_status(ex, rq.describe_transform_job(name), "TransformJobStatus", {"Completed"},
                    {"Failed", "Stopped"}, poll_s=wait.poll_s, timeout_s=wait.timeout_s, log=log)
    return list_outputs(ex, params["TransformOutput"]["S3OutputPath"])


def _check_batch_inputs(ex: Executor, input_uri: str, max_payload_mb: int) -> None:
    """SplitType None sends each object whole: one larger than MaxPayloadInMB fails the
    job only after the instances start, so refuse it here."""
    objects = [(k, s) for k, s in ex.paginate_keys(lambda t: rq.list_objects(input_uri, t)) if not k.endswith("/")]
    if not objects:
        raise limits.LimitError(f"TransformInput S3Uri must contain at least one object; found none under {input_uri}")
    if max_payload_mb:
        too_big = [(k, s) for k, s in objects if s > max_payload_mb * 1024 * 1024]
        if too_big:
            key, size = too_big[0]
            raise limits.LimitError(
                f"each input object must be at most MaxPayloadInMB ({max_payload_mb} MB) with SplitType None; "
                f"{key} is {size} bytes ({len(too_big)} such objects); use an async endpoint for them")


def list_outputs(ex: Executor, output_uri: str) -> list[str]:
    bucket, _ = limits.parse_s3_uri("TransformOutput.S3OutputPath", output_uri)
    keys = ex.paginate_keys(lambda t: rq.list_objects(output_uri, t))
    return [f"s3://{bucket}/{key}" for key, _ in keys if key.endswith(".out")]


# --- invocation ------------------------------------------------------------------------

def invoke(ex: Executor, endpoint: str, path: str, accept: str, attributes: Optional[str],
           content_type: Optional[str]) -> bytes:
    """Real-time: POST the file, return the transcript bytes."""
    limits.check_payload(os.path.getsize(path), realtime=True)  # before reading a 2 GB file into memory
    request = rq.invoke_endpoint(endpoint, Path(path).read_bytes(), content_type or content_type_for(path),
                                 accept, attributes)
    response = ex.call(request)
    body = response.get("Body")
    return body.read() if body is not None else b""


def invoke_async(ex: Executor, endpoint: str, path: str, input_prefix: str, accept: str,
                 attributes: Optional[str], content_type: Optional[str], invocation_timeout_s: Optional[int],
                 request_ttl_s: Optional[int], wait: Wait, log: Log) -> tuple[str, bytes]:
    """Upload, InvokeEndpointAsync, then poll OutputLocation / FailureLocation.

    Returns (OutputLocation, transcript bytes); raises WaitError with the failure
    object's text when the FailureLocation appears instead.
    """
    limits.check_payload(os.path.getsize(path), realtime=False)
    limits.parse_s3_uri("--input-prefix", input_prefix)
    key = f"{input_prefix.rstrip('/')}/{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}/" \
          f"{Path(path).name}"
    invoke_request = rq.invoke_endpoint_async(endpoint, key, content_type or content_type_for(path), accept,
                                              attributes, invocation_timeout_s, request_ttl_s)
    upload(ex, path, key)
    response = ex.call(invoke_request)
    output = response.get("OutputLocation", "")
    failure = response.get("FailureLocation", "")
    log(f"InferenceId {response.get('InferenceId', '-')}; output will be at {output or '(dry run)'}")
    if not wait.enabled or ex.dry_run:
        return output, b""
    waited = 0.0
    while True:
        if ex.exists(rq.head_object(output)) is not None:
            return output, ex.call(rq.get_object(output))["Body"].read()
        if failure and ex.exists(rq.head_object(failure)) is not None:
            reason = ex.call(rq.get_object(failure))["Body"].read().decode(errors="replace")
            raise WaitError(f"async inference failed ({failure}): {reason}")
        if waited >= wait.timeout_s:
            raise WaitError(f"no result at {output} after {wait.timeout_s:.0f} s")
        ex.sleep(wait.poll_s)
        waited += wait.poll_s


# --- cleanup -------------------------------------------------------------------------------

def cleanup(ex: Executor, endpoint: Optional[str], config: Optional[str], model: Optional[str],
            transform_job: Optional[str], delete_outputs: bool, extra_prefixes: list[str], log: Log) -> None:
    """Deregister scaling, delete endpoint, config and model; stop a running transform job;
    optionally delete S3 outputs. Every step tolerates "already gone", so it can run twice."""
    for prefix in extra_prefixes:
        limits.parse_s3_uri("--s3-prefix", prefix)
    models = [model] if model else []
    prefixes = list(extra_prefixes)

    if transform_job:
        job = ex.exists(rq.describe_transform_job(transform_job))
        if job:
            if job.get("TransformJobStatus") == "InProgress":
                log(f"stopping transform job {transform_job}")
                ex.call(rq.stop_transform_job(transform_job), missing_ok=True)
            models = models or [job["ModelName"]]
            if delete_outputs:
                prefixes.append(job["TransformOutput"]["S3OutputPath"])

    if endpoint:
        described = ex.exists(rq.describe_endpoint(endpoint))
        config = config or (described or {}).get("EndpointConfigName")
        deregister_scaling(ex, endpoint)
        unwatch_endpoint(ex, endpoint)
        ex.call(rq.delete_endpoint(endpoint), missing_ok=True)
    if config:
        described_config = ex.exists(rq.describe_endpoint_config(config)) or {}
        models = models or [v["ModelName"] for v in described_config.get("ProductionVariants", [])]
        if delete_outputs:
            output = described_config.get("AsyncInferenceConfig", {}).get("OutputConfig", {})
            prefixes += [output[k] for k in ("S3OutputPath", "S3FailurePath") if k in output]
        ex.call(rq.delete_endpoint_config(config), missing_ok=True)
    for name in dict.fromkeys(models):
        ex.call(rq.delete_model(name), missing_ok=True)
    for prefix in dict.fromkeys(prefixes):
        delete_prefix(ex, prefix, log)


def delete_prefix(ex: Executor, prefix: str, log: Log) -> None:
    bucket, _ = limits.parse_s3_uri("S3 prefix", prefix)
    keys = [k for k, _ in ex.paginate_keys(lambda t: rq.list_objects(prefix, t), missing_ok=True)]
    errors: list[dict] = []
    for start in range(0, len(keys), 1000):
        response = ex.call(rq.delete_objects(bucket, keys[start:start + 1000]), missing_ok=True)
        errors += response.get("Errors", [])
    if errors:
        shown = ", ".join(f"{e.get('Key')} ({e.get('Code')}: {e.get('Message')})" for e in errors[:10])
        more = f" and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise PartialFailure(f"could not delete {len(errors)} of {len(keys)} objects under {prefix}: {shown}{more}")
    if keys:
        log(f"deleted {len(keys)} objects under {prefix}")
