"""Pure request builders: each returns a :class:`Request` (service, operation, params)
and calls nothing.

Why pure: the same objects are printed by ``--dry-run``, sent by the executor and
asserted field by field in the tests, so what a user reviews is exactly what runs.
Validation lives in :mod:`deploy.limits`; builders call it for the fields they set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from . import limits

VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC_NAMESPACE = "AWS/SageMaker"


@dataclass(frozen=True)
class Request:
    """One AWS API call: ``operation`` is the API name (CreateModel), as in the API reference."""

    service: str
    operation: str
    params: dict[str, Any] = field(default_factory=dict)


# --- STS / ECR / S3 ------------------------------------------------------------

def get_caller_identity() -> Request:
    return Request("sts", "GetCallerIdentity")


def describe_repository(name: str) -> Request:
    return Request("ecr", "DescribeRepositories", {"repositoryNames": [limits.check_ecr_repository(name)]})


def create_repository(name: str) -> Request:
    return Request("ecr", "CreateRepository", {
        "repositoryName": limits.check_ecr_repository(name),
        "imageScanningConfiguration": {"scanOnPush": True},
        "imageTagMutability": "MUTABLE",
    })


def get_authorization_token() -> Request:
    return Request("ecr", "GetAuthorizationToken")


def upload_file(path: str, s3_uri: str) -> Request:
    """The managed transfer (PutObject, multipart above 8 MB), so 1 GB async inputs work."""
    bucket, key = limits.parse_s3_uri("S3 destination", s3_uri, need_key=True)
    return Request("s3", "UploadFile", {"Filename": str(path), "Bucket": bucket, "Key": key})


def head_object(s3_uri: str) -> Request:
    bucket, key = limits.parse_s3_uri("S3 object", s3_uri, need_key=True)
    return Request("s3", "HeadObject", {"Bucket": bucket, "Key": key})


def get_object(s3_uri: str) -> Request:
    bucket, key = limits.parse_s3_uri("S3 object", s3_uri, need_key=True)
    return Request("s3", "GetObject", {"Bucket": bucket, "Key": key})


def list_objects(s3_uri: str, token: Optional[str] = None) -> Request:
    bucket, prefix = limits.parse_s3_uri("S3 prefix", s3_uri)
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if token:
        params["ContinuationToken"] = token
    return Request("s3", "ListObjectsV2", params)


def delete_objects(bucket: str, keys: list[str]) -> Request:
    # DeleteObjects takes at most 1000 keys; callers chunk (dropping the rest silently would leave objects behind).
    if len(keys) > 1000:
        raise ValueError(f"DeleteObjects takes at most 1000 keys; got {len(keys)} (chunk them)")
    return Request("s3", "DeleteObjects", {
        "Bucket": bucket,
        "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": True},
    })


# --- model -----------------------------------------------------------------------

def model_environment(
    *,
    backend: str = "auto",
    model_data: bool = False,
    chunk_length_s: Optional[float] = None,
    max_batch: Optional[int] = None,
    language: Optional[str] = None,
    compute_type: Optional[str] = None,
    workers: Optional[int] = None,
    timeout_s: Optional[int] = None,
    extra: Optional[Mapping[str, str]] = None,
) -> dict[str, str]:
    """The container's environment (names from serve/settings.py).

    With model data, WHISPER_MODEL_DIR is pinned to /opt/ml/model so a model.tar.gz
    wins over a model baked into the image (which sets WHISPER_MODEL_DIR itself).
    """
    env: dict[str, str] = {"WHISPER_BACKEND": backend}
    if model_data:
        env["WHISPER_MODEL_DIR"] = "/opt/ml/model"
    optional = {
        "WHISPER_CHUNK_LENGTH_S": chunk_length_s,
        "WHISPER_MAX_BATCH": max_batch,
        "WHISPER_LANGUAGE": language,
        "WHISPER_COMPUTE_TYPE": compute_type,
        "SAGEMAKER_MODEL_SERVER_WORKERS": workers,
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": timeout_s,
    }
    env.update({k: str(v) for k, v in optional.items() if v is not None})
    env.update(extra or {})
    return env


def create_model(name: str, image: str, role_arn: str, environment: Mapping[str, str],
                 model_data_url: Optional[str] = None) -> Request:
    container: dict[str, Any] = {
        "Image": limits.check_image(image),
        "Mode": "SingleModel",
        "Environment": dict(limits.check_environment("Environment", environment)),
    }
    if model_data_url:
        limits.parse_s3_uri("ModelDataUrl", model_data_url, need_key=True)
        container["ModelDataUrl"] = model_data_url
    return Request("sagemaker", "CreateModel", {
        "ModelName": limits.check_name("ModelName", name),
        "ExecutionRoleArn": limits.check_role_arn(role_arn),
        "PrimaryContainer": container,
    })


def describe_model(name: str) -> Request:
    return Request("sagemaker", "DescribeModel", {"ModelName": limits.check_name("ModelName", name)})


def delete_model(name: str) -> Request:
    return Request("sagemaker", "DeleteModel", {"ModelName": limits.check_name("ModelName", name)})


# --- hosting ---------------------------------------------------------------------

def async_inference_config(output_path: str, failure_path: str, max_concurrent: int,
                           success_topic: Optional[str] = None, error_topic: Optional[str] = None) -> dict:
    limits.parse_s3_uri("AsyncInferenceConfig.OutputConfig.S3OutputPath", output_path, limits.ASYNC_S3_PATH_MAX)
    limits.parse_s3_uri("AsyncInferenceConfig.OutputConfig.S3FailurePath", failure_path, limits.ASYNC_S3_PATH_MAX)
    output: dict[str, Any] = {"S3OutputPath": output_path, "S3FailurePath": failure_path}
    topics = {}
    if success_topic:
        topics["SuccessTopic"] = limits.check_sns_arn("NotificationConfig.SuccessTopic", success_topic)
    if error_topic:
        topics["ErrorTopic"] = limits.check_sns_arn("NotificationConfig.ErrorTopic", error_topic)
    if topics:
        output["NotificationConfig"] = topics
    return {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": limits.check_int_range(
            "AsyncInferenceConfig.ClientConfig.MaxConcurrentInvocationsPerInstance", max_concurrent,
            *limits.ASYNC_MAX_CONCURRENT_RANGE)},
        "OutputConfig": output,
    }


def create_endpoint_config(name: str, model: str, instance_type: str, instance_count: int,
                           startup_timeout_s: int, download_timeout_s: int,
                           async_config: Optional[dict] = None) -> Request:
    variant = {
        "VariantName": VARIANT,
        "ModelName": limits.check_name("ModelName", model),
        "InstanceType": limits.check_instance_type("ProductionVariant.InstanceType", instance_type),
        "InitialInstanceCount": limits.check_int_range("ProductionVariant.InitialInstanceCount", instance_count, 1),
        "InitialVariantWeight": 1.0,
        "ContainerStartupHealthCheckTimeoutInSeconds": limits.check_int_range(
            "ContainerStartupHealthCheckTimeoutInSeconds", startup_timeout_s, *limits.STARTUP_TIMEOUT_RANGE),
        "ModelDataDownloadTimeoutInSeconds": limits.check_int_range(
            "ModelDataDownloadTimeoutInSeconds", download_timeout_s, *limits.DOWNLOAD_TIMEOUT_RANGE),
    }
    params: dict[str, Any] = {
        "EndpointConfigName": limits.check_name("EndpointConfigName", name),
        "ProductionVariants": [variant],
    }
    if async_config is not None:
        params["AsyncInferenceConfig"] = async_config
    return Request("sagemaker", "CreateEndpointConfig", params)


def create_endpoint(name: str, config: str) -> Request:
    return Request("sagemaker", "CreateEndpoint", {
        "EndpointName": limits.check_name("EndpointName", name),
        "EndpointConfigName": limits.check_name("EndpointConfigName", config),
    })


def update_endpoint(name: str, config: str) -> Request:
    return Request("sagemaker", "UpdateEndpoint", {
        "EndpointName": limits.check_name("EndpointName", name),
        "EndpointConfigName": limits.check_name("EndpointConfigName", config),
    })


def describe_endpoint(name: str) -> Request:
    return Request("sagemaker", "DescribeEndpoint", {"EndpointName": limits.check_name("EndpointName", name)})


def describe_endpoint_config(name: str) -> Request:
    return Request("sagemaker", "DescribeEndpointConfig",
                   {"EndpointConfigName": limits.check_name("EndpointConfigName", name)})


def delete_endpoint(name: str) -> Request:
    return Request("sagemaker", "DeleteEndpoint", {"EndpointName": limits.check_name("EndpointName", name)})


def delete_endpoint_config(name: str) -> Request:
    return Request("sagemaker", "DeleteEndpointConfig",
                   {"EndpointConfigName": limits.check_name("EndpointConfigName", name)})


# --- autoscaling -----------------------------------------------------------------

def resource_id(endpoint: str, variant: str = VARIANT) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def register_scalable_target(endpoint: str, min_capacity: int, max_capacity: int, allow_zero: bool) -> Request:
    limits.check_scaling(min_capacity, max_capacity, allow_zero)
    return Request("application-autoscaling", "RegisterScalableTarget", {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
        "MinCapacity": min_capacity,
        "MaxCapacity": max_capacity,
    })


def _target_tracking(endpoint: str, policy: str, target: float, metric: dict,
                     scale_in_cooldown: int, scale_out_cooldown: int) -> Request:
    return Request("application-autoscaling", "PutScalingPolicy", {
        "PolicyName": policy,
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(limits.check_positive("TargetValue", target)),
            **metric,
            "ScaleInCooldown": limits.check_int_range("ScaleInCooldown", scale_in_cooldown, 0),
            "ScaleOutCooldown": limits.check_int_range("ScaleOutCooldown", scale_out_cooldown, 0),
        },
    })


def invocations_policy(endpoint: str, target: float, scale_in_cooldown: int = 300,
                       scale_out_cooldown: int = 60) -> Request:
    """Real-time: keep invocations per instance per minute near ``target``."""
    return _target_tracking(
        endpoint, invocations_policy_name(endpoint), target,
        {"PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}},
        scale_in_cooldown, scale_out_cooldown)


def concurrency_policy(endpoint: str, target: float, scale_in_cooldown: int = 300,
                       scale_out_cooldown: int = 60) -> Request:
    """Real-time: keep the requests in flight per model container (one per instance) near ``target``.

    SageMaker's high-resolution ConcurrentRequestsPerModel (every 10 s) counts requests the
    container holds, queued ones included, until a streamed answer's last part is sent: it
    follows the work whether a request is 3 s or 30 min of audio, and reacts to a burst
    within seconds rather than minutes."""
    return _target_tracking(
        endpoint, concurrency_policy_name(endpoint), target,
        {"PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantConcurrentRequestsPerModelHighResolution"}},
        scale_in_cooldown, scale_out_cooldown)


def queued_audio_policy(endpoint: str, target: float, namespace: str, scale_in_cooldown: int = 300,
                        scale_out_cooldown: int = 60) -> Request:
    """Real-time: keep the seconds of audio queued per worker near ``target``.

    The container's own gauge (EMF ``QueuedAudioSeconds``, one line per worker every few
    seconds): the scheduler knows how much audio waits, which no outside metric sees.
    Average over the lines is the load per worker; adding instances lowers it."""
    return _target_tracking(
        endpoint, queued_audio_policy_name(endpoint), target,
        {"CustomizedMetricSpecification": {
            "MetricName": "QueuedAudioSeconds",
            "Namespace": limits.check_namespace(namespace),
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}],
            "Statistic": "Average",
        }},
        scale_in_cooldown, scale_out_cooldown)


def backlog_policy(endpoint: str, target: float, scale_in_cooldown: int = 600,
                   scale_out_cooldown: int = 300) -> Request:
    """Async: keep the queued requests per instance near ``target``; scales in to MinCapacity (0)."""
    return _target_tracking(
        endpoint, backlog_policy_name(endpoint), target,
        {"CustomizedMetricSpecification": {
            "MetricName": "ApproximateBacklogSizePerInstance",
            "Namespace": METRIC_NAMESPACE,
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
            "Statistic": "Average",
        }},
        scale_in_cooldown, scale_out_cooldown)


def scale_from_zero_policy(endpoint: str, cooldown: int = 300) -> Request:
    """Async at 0 instances: target tracking sees no per-instance metric, so a step
    policy driven by the HasBacklogWithoutCapacity alarm adds the first instance."""
    return Request("application-autoscaling", "PutScalingPolicy", {
        "PolicyName": scale_from_zero_policy_name(endpoint),
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": limits.check_int_range("Cooldown", cooldown, 0),
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    })


def backlog_alarm(endpoint: str, policy_arn: str) -> Request:
    return Request("cloudwatch", "PutMetricAlarm", {
        "AlarmName": alarm_name(endpoint),
        "AlarmDescription": f"Scale {endpoint} out from zero when requests wait without an instance",
        "MetricName": "HasBacklogWithoutCapacity",
        "Namespace": METRIC_NAMESPACE,
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "AlarmActions": [policy_arn],
    })


def invocations_policy_name(endpoint: str) -> str:
    return f"{endpoint}-invocations-per-instance"


def concurrency_policy_name(endpoint: str) -> str:
    return f"{endpoint}-concurrent-requests-per-model"


def queued_audio_policy_name(endpoint: str) -> str:
    return f"{endpoint}-queued-audio-per-worker"


def backlog_policy_name(endpoint: str) -> str:
    return f"{endpoint}-backlog-per-instance"


def scale_from_zero_policy_name(endpoint: str) -> str:
    return f"{endpoint}-scale-out-from-zero"


def alarm_name(endpoint: str) -> str:
    return f"{endpoint}-HasBacklogWithoutCapacity"


def describe_scaling_policies(endpoint: str) -> Request:
    return Request("application-autoscaling", "DescribeScalingPolicies", {
        "ServiceNamespace": "sagemaker", "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
    })


def delete_scaling_policy(endpoint: str, policy: str) -> Request:
    return Request("application-autoscaling", "DeleteScalingPolicy", {
        "PolicyName": policy, "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint), "ScalableDimension": SCALABLE_DIMENSION,
    })


def deregister_scalable_target(endpoint: str) -> Request:
    return Request("application-autoscaling", "DeregisterScalableTarget", {
        "ServiceNamespace": "sagemaker", "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
    })


def delete_alarms(endpoint: str) -> Request:
    return Request("cloudwatch", "DeleteAlarms", {"AlarmNames": [alarm_name(endpoint)]})


# --- batch transform ---------------------------------------------------------------

def create_transform_job(
    name: str, model: str, input_uri: str, output_uri: str, *,
    instance_type: str, instance_count: int, accept: str,
    max_payload_mb: int, max_concurrent: int, timeout_s: int, retries: int,
    content_type: Optional[str] = None, environment: Optional[Mapping[str, str]] = None,
) -> Request:
    """One audio file per request: SplitType None + SingleRecord, so each S3 object
    (at most MaxPayloadInMB) is POSTed whole and its transcript lands in <key>.out."""
    limits.check_batch(max_payload_mb, max_concurrent, timeout_s, retries)
    limits.parse_s3_uri("TransformInput.DataSource.S3DataSource.S3Uri", input_uri)
    limits.parse_s3_uri("TransformOutput.S3OutputPath", output_uri)
    data_input: dict[str, Any] = {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
        "SplitType": "None",
        "CompressionType": "None",
    }
    if content_type:
        data_input["ContentType"] = limits.check_header("TransformInput.ContentType", content_type)
    params: dict[str, Any] = {
        "TransformJobName": limits.check_name("TransformJobName", name),
        "ModelName": limits.check_name("ModelName", model),
        "MaxConcurrentTransforms": max_concurrent,
        "MaxPayloadInMB": max_payload_mb,
        "BatchStrategy": "SingleRecord",
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": timeout_s, "InvocationsMaxRetries": retries},
        "TransformInput": data_input,
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": limits.check_accept(accept),
                            "AssembleWith": "None"},
        "TransformResources": {
            "InstanceType": limits.check_instance_type("TransformResources.InstanceType", instance_type),
            "InstanceCount": limits.check_int_range("TransformResources.InstanceCount", instance_count, 1),
        },
    }
    if environment:
        params["Environment"] = dict(limits.check_environment(
            "CreateTransformJob.Environment", environment,
            limits.TRANSFORM_ENV_MAX_ENTRIES, limits.TRANSFORM_ENV_VALUE_MAX))
    return Request("sagemaker", "CreateTransformJob", params)


def describe_transform_job(name: str) -> Request:
    return Request("sagemaker", "DescribeTransformJob",
                   {"TransformJobName": limits.check_name("TransformJobName", name)})


def stop_transform_job(name: str) -> Request:
    return Request("sagemaker", "StopTransformJob",
                   {"TransformJobName": limits.check_name("TransformJobName", name)})


# --- invocation -------------------------------------------------------------------

def invoke_endpoint(endpoint: str, body: bytes, content_type: str, accept: str,
                    custom_attributes: Optional[str] = None) -> Request:
    limits.check_payload(len(body), realtime=True)
    params: dict[str, Any] = {
        "EndpointName": limits.check_name("EndpointName", endpoint),
        "Body": body,
        "ContentType": limits.check_header("ContentType", content_type),
        "Accept": limits.check_accept(accept),
    }
    if custom_attributes:
        params["CustomAttributes"] = limits.check_header("CustomAttributes", custom_attributes)
    return Request("sagemaker-runtime", "InvokeEndpoint", params)


def invoke_endpoint_async(endpoint: str, input_location: str, content_type: str, accept: str,
                          custom_attributes: Optional[str] = None,
                          invocation_timeout_s: Optional[int] = None,
                          request_ttl_s: Optional[int] = None) -> Request:
    limits.parse_s3_uri("InputLocation", input_location, need_key=True)
    params: dict[str, Any] = {
        "EndpointName": limits.check_name("EndpointName", endpoint),
        "InputLocation": input_location,
        "ContentType": limits.check_header("ContentType", content_type),
        "Accept": limits.check_accept(accept),
    }
    if custom_attributes:
        params["CustomAttributes"] = limits.check_header("CustomAttributes", custom_attributes)
    if invocation_timeout_s is not None:
        params["InvocationTimeoutSeconds"] = limits.check_int_range(
            "InvocationTimeoutSeconds", invocation_timeout_s, *limits.ASYNC_INVOCATION_TIMEOUT_RANGE)
    if request_ttl_s is not None:
        params["RequestTTLSeconds"] = limits.check_int_range(
            "RequestTTLSeconds", request_ttl_s, *limits.ASYNC_REQUEST_TTL_RANGE)
    return Request("sagemaker-runtime", "InvokeEndpointAsync", params)
