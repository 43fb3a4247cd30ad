"""Every SageMaker (and ECR / S3 / autoscaling) limit this tool relies on, checked
before any request leaves the machine.

Why here and not left to the service: a rejected CreateEndpoint surfaces minutes
later as a Failed endpoint, a rejected transform job wastes an instance start, and
the service's messages name API fields, not our flags. Each check raises
:class:`LimitError` whose message names the limit (the API field and its range)
and the value that broke it.

The numbers come from the SageMaker API reference (and the botocore service
model, which carries the same min/max/pattern): keep the constant, the check and
the README's "Limits checked before any request" table together.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional


class LimitError(ValueError):
    """A value outside a documented SageMaker limit; the message names the limit."""


# --- names -------------------------------------------------------------------
NAME_MAX = 63
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
ECR_REPOSITORY_PATTERN = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
ECR_REPOSITORY_LENGTH = (2, 256)
ECR_TAG_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}$")
IMAGE_MAX = 255
INSTANCE_TYPE_PATTERN = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")

# --- ARNs and S3 ---------------------------------------------------------------
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+$")
ROLE_ARN_LENGTH = (20, 2048)
SNS_ARN_PATTERN = re.compile(r"^arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+$")
SNS_ARN_MAX = 2048
S3_URI_PATTERN = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
S3_URI_MAX = 1024  # ModelDataUrl, TransformInput S3Uri, TransformOutput S3OutputPath
ASYNC_S3_PATH_MAX = 512  # AsyncInferenceOutputConfig S3OutputPath / S3FailurePath

# --- containers ----------------------------------------------------------------
ENV_MAX_ENTRIES = 100  # ContainerDefinition.Environment
ENV_KEY_MAX = 1024
ENV_VALUE_MAX = 1024
TRANSFORM_ENV_MAX_ENTRIES = 16  # CreateTransformJob.Environment
TRANSFORM_ENV_VALUE_MAX = 10240
DIRECT_RUN_ONLY = "WHISPER_API_KEY"
"""The container's key for direct runs: on SageMaker, IAM guards InvokeEndpoint and the container receives no
Authorization header, so with it set every request would be refused (401)."""
ENV_KEY_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# --- hosting -------------------------------------------------------------------
STARTUP_TIMEOUT_RANGE = (60, 3600)  # ContainerStartupHealthCheckTimeoutInSeconds
DOWNLOAD_TIMEOUT_RANGE = (60, 3600)  # ModelDataDownloadTimeoutInSeconds
ASYNC_MAX_CONCURRENT_RANGE = (1, 1000)  # AsyncInferenceClientConfig.MaxConcurrentInvocationsPerInstance
REALTIME_PAYLOAD_MAX = 6 * 1024 * 1024  # InvokeEndpoint Body (6 MB)
REALTIME_RESPONSE_S = 60  # InvokeEndpoint: "containers must respond to requests within 60 seconds"
ASYNC_PAYLOAD_MAX = 1024 ** 3  # InvokeEndpointAsync input object (1 GB)
HEADER_MAX = 1024  # CustomAttributes, Accept, ContentType
ASYNC_INVOCATION_TIMEOUT_RANGE = (1, 3600)  # InvokeEndpointAsync InvocationTimeoutSeconds
ASYNC_REQUEST_TTL_RANGE = (60, 21600)  # InvokeEndpointAsync RequestTTLSeconds

# --- CloudWatch ------------------------------------------------------------------
NAMESPACE_MAX = 255  # PutMetricData / EMF namespace
NAMESPACE_PATTERN = re.compile(r"^[^:]+$")
DASHBOARD_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")  # PutDashboard DashboardName

# --- batch transform -----------------------------------------------------------
MAX_PAYLOAD_RANGE = (0, 100)  # MaxPayloadInMB
CONCURRENCY_TIMES_PAYLOAD_MAX = 100  # MaxConcurrentTransforms x MaxPayloadInMB
INVOCATIONS_TIMEOUT_RANGE = (1, 3600)  # ModelClientConfig.InvocationsTimeoutInSeconds
INVOCATIONS_RETRIES_RANGE = (0, 3)  # ModelClientConfig.InvocationsMaxRetries

# --- what our container answers ------------------------------------------------
ACCEPT_TYPES = (
    "application/json",
    "text/plain",
    "text/vtt",
    "application/x-subrip",
    "text/tab-separated-values",
)


def _fail(limit: str, value: object) -> None:
    raise LimitError(f"{limit}; got {value!r}")


def check_int_range(field: str, value: int, low: int, high: Optional[int] = None) -> int:
    """``low <= value <= high`` (``high`` None: no upper bound)."""
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(f"{field} must be an integer", value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        _fail(f"{field} must be {bound}", value)
    return value


def check_name(field: str, name: str) -> str:
    """SageMaker resource names (model, endpoint, endpoint config, variant, transform job)."""
    if not name or len(name) > NAME_MAX:
        _fail(f"{field} must be 1 to {NAME_MAX} characters", name)
    if not NAME_PATTERN.match(name):
        _fail(f"{field} must match ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$ (letters, digits, single or repeated hyphens inside)", name)
    return name


def check_ecr_repository(name: str) -> str:
    low, high = ECR_REPOSITORY_LENGTH
    if not low <= len(name) <= high or not ECR_REPOSITORY_PATTERN.match(name):
        _fail(f"ECR repositoryName must be {low} to {high} lowercase characters matching "
              "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*", name)
    return name


def check_image_tag(tag: str) -> str:
    if not ECR_TAG_PATTERN.match(tag):
        _fail("ECR imageTag must be 1 to 128 characters of [a-zA-Z0-9_.-], not starting with . or -", tag)
    return tag


def check_image(image: str) -> str:
    if not image or len(image) > IMAGE_MAX or any(c.isspace() for c in image):
        _fail(f"ContainerDefinition.Image must be 1 to {IMAGE_MAX} characters without whitespace", image)
    return image


def check_instance_type(field: str, instance_type: str) -> str:
    # Shape only: the service adds instance types faster than any enum we could copy.
    if not INSTANCE_TYPE_PATTERN.match(instance_type or ""):
        _fail(f"{field} must look like ml.<family>.<size> (e.g. ml.g5.xlarge)", instance_type)
    return instance_type


def check_role_arn(arn: str) -> str:
    low, high = ROLE_ARN_LENGTH
    if not low <= len(arn or "") <= high or not ROLE_ARN_PATTERN.match(arn):
        _fail("ExecutionRoleArn must be an IAM role ARN arn:aws:iam::<12-digit account>:role/<name> "
              f"({low} to {high} characters)", arn)
    return arn


def check_sns_arn(field: str, arn: str) -> str:
    if len(arn) > SNS_ARN_MAX or not SNS_ARN_PATTERN.match(arn):
        _fail(f"{field} must be an SNS topic ARN arn:aws:sns:<region>:<12-digit account>:<topic>", arn)
    return arn


def parse_s3_uri(field: str, uri: str, max_length: int = S3_URI_MAX, need_key: bool = False) -> tuple[str, str]:
    """``s3://bucket[/key]`` -> (bucket, key); bucket names follow the S3 naming rules."""
    match = S3_URI_PATTERN.match(uri or "")
    if not match or ".." in match["bucket"]:
        _fail(f"{field} must be an S3 URI s3://<bucket 3-63 chars of a-z0-9.->/<key>", uri)
    if len(uri) > max_length:
        _fail(f"{field} must be at most {max_length} characters", uri)
    key = match["key"] or ""
    if need_key and (not key or key.endswith("/")):
        _fail(f"{field} must name an object (s3://bucket/key), not a bucket or prefix", uri)
    return match["bucket"], key


def check_environment(
    field: str,
    env: Mapping[str, str],
    max_entries: int = ENV_MAX_ENTRIES,
    value_max: int = ENV_VALUE_MAX,
) -> Mapping[str, str]:
    if len(env) > max_entries:
        _fail(f"{field} may have at most {max_entries} entries", len(env))
    if DIRECT_RUN_ONLY in env:  # the value is a secret: named, never printed
        _fail(f"{field} must not set {DIRECT_RUN_ONLY}: it is for direct runs (ECS, EKS, a laptop). On SageMaker, "
              "IAM guards InvokeEndpoint and the container receives no Authorization header, so every request "
              "would get 401", DIRECT_RUN_ONLY)
    for key, value in env.items():
        if not key or len(key) > ENV_KEY_MAX or not ENV_KEY_PATTERN.match(key):
            _fail(f"{field} keys must be 1 to {ENV_KEY_MAX} characters matching [a-zA-Z_][a-zA-Z0-9_]*", key)
        if len(value) > value_max:
            _fail(f"{field} values must be at most {value_max} characters ({key})", len(value))
    return env


def check_header(field: str, value: str) -> str:
    if len(value) > HEADER_MAX:
        _fail(f"{field} must be at most {HEADER_MAX} characters", len(value))
    if not value.isascii():
        _fail(f"{field} must be ASCII", value)
    return value


def check_accept(accept: str) -> str:
    if accept not in ACCEPT_TYPES:
        _fail(f"Accept must be one of {', '.join(ACCEPT_TYPES)} (what the container renders)", accept)
    return accept


def check_payload(size: int, realtime: bool) -> int:
    if realtime and size > REALTIME_PAYLOAD_MAX:
        _fail("InvokeEndpoint payloads are limited to 6 MB; send larger files to an async endpoint "
              "with `whisper-deploy invoke-async` (up to 1 GB) or use batch transform", size)
    if not realtime and size > ASYNC_PAYLOAD_MAX:
        _fail("InvokeEndpointAsync input is limited to 1 GB; split the audio or use batch transform", size)
    return size


def check_batch(max_payload_mb: int, max_concurrent: int, timeout_s: int, retries: int) -> None:
    check_int_range("MaxPayloadInMB", max_payload_mb, *MAX_PAYLOAD_RANGE)
    check_int_range("MaxConcurrentTransforms", max_concurrent, 0)
    if max_concurrent * max_payload_mb > CONCURRENCY_TIMES_PAYLOAD_MAX:
        _fail(f"MaxConcurrentTransforms x MaxPayloadInMB must be at most {CONCURRENCY_TIMES_PAYLOAD_MAX} MB",
              f"{max_concurrent} x {max_payload_mb}")
    check_int_range("ModelClientConfig.InvocationsTimeoutInSeconds", timeout_s, *INVOCATIONS_TIMEOUT_RANGE)
    check_int_range("ModelClientConfig.InvocationsMaxRetries", retries, *INVOCATIONS_RETRIES_RANGE)


def check_scaling(min_capacity: int, max_capacity: int, allow_zero: bool) -> None:
    """Real-time variants cannot scale to 0 (MinCapacity >= 1); async ones can."""
    check_int_range("MinCapacity" + ("" if allow_zero else " (real-time endpoints cannot scale to zero)"),
                    min_capacity, 0 if allow_zero else 1)
    check_int_range("MaxCapacity", max_capacity, 1)
    if min_capacity > max_capacity:
        _fail("MinCapacity must be at most MaxCapacity", f"{min_capacity} > {max_capacity}")


def check_positive(field: str, value: float) -> float:
    if not value > 0:
        _fail(f"{field} must be greater than 0", value)
    return value



def check_namespace(namespace: str) -> str:
    """A custom CloudWatch namespace: 1-255 characters, no colon, not AWS's own."""
    if not 1 <= len(namespace or "") <= NAMESPACE_MAX or not NAMESPACE_PATTERN.match(namespace):
        _fail(f"a CloudWatch namespace must be 1 to {NAMESPACE_MAX} characters without ':'", namespace)
    if namespace.startswith("AWS/"):
        _fail("a custom CloudWatch namespace must not start with AWS/ (reserved for AWS services)", namespace)
    return namespace


def check_dashboard_name(name: str) -> str:
    if not DASHBOARD_NAME_PATTERN.match(name or ""):
        _fail("DashboardName must be 1 to 255 characters of A-Z, a-z, 0-9, '-' and '_'", name)
    return name
