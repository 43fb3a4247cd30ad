"""CloudWatch alarms and the dashboard of one endpoint, as :class:`~deploy.requests.Request` values.

Why beside the request builders and not in them: these are many calls over one
idea (watch an endpoint), with their own thresholds; like requests.py they call
nothing, so ``--dry-run`` prints exactly what would be sent.

Two sources of metrics:

* SageMaker's (namespace ``AWS/SageMaker``, dimensions EndpointName + VariantName;
  async queue metrics EndpointName only; instance use in ``/aws/sagemaker/Endpoints``);
* the container's own, written as EMF lines to its log (namespace
  ``WhisperSageMaker`` unless changed, dimensions EndpointName + VariantName): the
  catalogue is in the README's metrics table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from . import limits
from .requests import METRIC_NAMESPACE, VARIANT, Request

DEFAULT_NAMESPACE = "WhisperSageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
PERIOD_S = 60


@dataclass(frozen=True)
class Thresholds:
    """When each alarm fires. ``p99_latency_s`` None: 30 s real-time (half of InvokeEndpoint's
    60 s limit), 1800 s async (half of the longest InvocationTimeoutSeconds)."""

    error_percent: float = 1.0
    p99_latency_s: Optional[float] = None
    queued_audio_s: float = 120.0
    queued_minutes: int = 5
    backlog_age_s: float = 900.0


@dataclass(frozen=True)
class Monitoring:
    """What to create for an endpoint: alarms (to ``topics`` when given) and/or a dashboard."""

    alarms: bool = False
    dashboard: bool = False
    namespace: str = DEFAULT_NAMESPACE
    topics: tuple[str, ...] = ()
    thresholds: Thresholds = Thresholds()


def _variant(endpoint: str) -> list[dict]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]


def _alarm(name: str, description: str, topics: tuple[str, ...], threshold: float, evaluation_periods: int,
           datapoints: int, metric: dict[str, Any]) -> Request:
    params: dict[str, Any] = {
        "AlarmName": name,
        "AlarmDescription": description,
        **metric,
        "EvaluationPeriods": limits.check_int_range("EvaluationPeriods", evaluation_periods, 1),
        "DatapointsToAlarm": datapoints,
        "Threshold": float(limits.check_positive("Threshold", threshold)),
        "ComparisonOperator": "GreaterThanThreshold",
        # No data is no traffic (or, for our EMF gauge, no worker writing): not a breach.
        "TreatMissingData": "notBreaching",
    }
    if topics:
        params["AlarmActions"] = list(topics)
        params["OKActions"] = list(topics)
    return Request("cloudwatch", "PutMetricAlarm", params)


def alarm_names(endpoint: str) -> list[str]:
    """Every alarm this module may create for ``endpoint`` (cleanup deletes those that exist)."""
    return [f"{endpoint}-5xx-rate", f"{endpoint}-p99-model-latency", f"{endpoint}-queued-audio",
            f"{endpoint}-backlog-age"]


def alarms(endpoint: str, is_async: bool, monitoring: Monitoring) -> list[Request]:
    """5xx rate, p99 ModelLatency, queued audio; async: the age of the oldest queued request."""
    t = monitoring.thresholds
    topics = tuple(limits.check_sns_arn("--alarm-sns-topic", arn) for arn in monitoring.topics)
    errors, latency, queued, backlog = alarm_names(endpoint)
    if is_async:
        # Async endpoints publish no Invocations; Invocation5XXErrors is 1 per 5xx and 0 per
        # other answer, so its Average is the share of 5xx.
        error_metrics = [
            _stat("errors", METRIC_NAMESPACE, "Invocation5XXErrors", _variant(endpoint), "Average"),
            {"Id": "rate", "Expression": "100 * errors", "Label": "5xx % of answers", "ReturnData": True}]
    else:
        error_metrics = [
            _stat("errors", METRIC_NAMESPACE, "Invocation5XXErrors", _variant(endpoint), "Sum"),
            _stat("invocations", METRIC_NAMESPACE, "Invocations", _variant(endpoint), "Sum"),
            {"Id": "rate", "Expression": "IF(invocations > 0, 100 * errors / invocations, 0)",
             "Label": "5xx % of invocations", "ReturnData": True}]
    p99_s = t.p99_latency_s if t.p99_latency_s is not None else (1800.0 if is_async else 30.0)
    requests = [
        _alarm(errors, f"More than {t.error_percent:g}% of {endpoint}'s answers are 5xx (3 of 5 minutes)", topics,
               t.error_percent, 5, 3, {"Metrics": error_metrics}),
        _alarm(latency, f"{endpoint}'s p99 ModelLatency is above {p99_s:g} s (3 of 5 minutes)", topics,
               limits.check_positive("--alarm-p99-latency", p99_s) * 1e6, 5, 3,  # ModelLatency is in microseconds
               {"MetricName": "ModelLatency", "Namespace": METRIC_NAMESPACE, "Dimensions": _variant(endpoint),
                "ExtendedStatistic": "p99", "Period": PERIOD_S}),
        # Maximum over the workers' gauges: one worker falling behind is worth knowing.
        _alarm(queued, f"A worker of {endpoint} holds more than {t.queued_audio_s:g} s of audio queued for "
                       f"{t.queued_minutes} minutes", topics, t.queued_audio_s, t.queued_minutes, t.queued_minutes,
               {"MetricName": "QueuedAudioSeconds", "Namespace": limits.check_namespace(monitoring.namespace),
                "Dimensions": _variant(endpoint), "Statistic": "Maximum", "Period": PERIOD_S}),
    ]
    if is_async:
        requests.append(_alarm(
            backlog, f"{endpoint}'s oldest queued request is older than {t.backlog_age_s:g} s (5 minutes)", topics,
            t.backlog_age_s, 5, 5,
            {"MetricName": "ApproximateAgeOfOldestRequest", "Namespace": METRIC_NAMESPACE,
             "Dimensions": [{"Name": "EndpointName", "Value": endpoint}], "Statistic": "Maximum",
             "Period": PERIOD_S}))
    return requests


def _stat(metric_id: str, namespace: str, name: str, dimensions: list[dict], stat: str) -> dict:
    return {"Id": metric_id, "ReturnData": False,
            "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
                           "Period": PERIOD_S, "Stat": stat}}


def describe_alarms(endpoint: str) -> Request:
    return Request("cloudwatch", "DescribeAlarms", {"AlarmNames": alarm_names(endpoint)})


def delete_alarms(names: list[str]) -> Request:
    return Request("cloudwatch", "DeleteAlarms", {"AlarmNames": names})


# --- dashboard --------------------------------------------------------------------------

def dashboard_name(endpoint: str) -> str:
    return limits.check_dashboard_name(f"whisper-{endpoint}")


def dashboard(endpoint: str, region: str, is_async: bool, namespace: str = DEFAULT_NAMESPACE) -> Request:
    """One dashboard: SageMaker's view from outside, then what the container knows (EMF)."""
    ours = limits.check_namespace(namespace)
    sm, host = METRIC_NAMESPACE, INSTANCE_NAMESPACE
    ep = ["EndpointName", endpoint]
    variant = ep + ["VariantName", VARIANT]
    widgets: list[tuple[str, list[list]]] = []
    if is_async:
        widgets += [
            ("Async queue (requests)", [[sm, "ApproximateBacklogSize", *ep, {"stat": "Maximum"}],
                                        [sm, "ApproximateBacklogSizePerInstance", *ep, {"stat": "Average"}],
                                        [sm, "HasBacklogWithoutCapacity", *ep, {"stat": "Maximum"}]]),
            ("Oldest queued request (s)", [[sm, "ApproximateAgeOfOldestRequest", *ep, {"stat": "Maximum"}]]),
            ("Async failures", [[sm, "InvocationFailures", *variant, {"stat": "Sum"}],
                                [sm, "Invocation5XXErrors", *variant, {"stat": "Sum"}]]),
        ]
    else:
        widgets += [
            ("Invocations and errors", [[sm, "Invocations", *variant, {"stat": "Sum"}],
                                        [sm, "Invocation4XXErrors", *variant, {"stat": "Sum"}],
                                        [sm, "Invocation5XXErrors", *variant, {"stat": "Sum"}]]),
            ("Concurrent requests per model", [[sm, "ConcurrentRequestsPerModel", *variant, {"stat": "Maximum"}],
                                               [sm, "ConcurrentRequestsPerModel", *variant, {"stat": "Average"}]]),
        ]
    widgets += [
        ("ModelLatency (microseconds)", [[sm, "ModelLatency", *variant, {"stat": "p50"}],
                                         [sm, "ModelLatency", *variant, {"stat": "p99"}]]),
        ("Instance use (%)", [[host, name, *variant, {"stat": "Average"}]
                              for name in ("CPUUtilization", "MemoryUtilization", "GPUUtilization",
                                           "GPUMemoryUtilization")]),
        ("Queued audio per worker (s): the scaling signal", [[ours, "QueuedAudioSeconds", *variant, {"stat": "Average"}],
                                                             [ours, "QueuedAudioSeconds", *variant, {"stat": "Maximum"}]]),
        ("Queued windows", [[ours, "QueuedWindows", *variant, {"stat": "Maximum"}]]),
        ("Requests (container)", [[ours, name, *variant, {"stat": "Sum"}]
                                  for name in ("Requests", "RequestsCancelled", "RequestsTimedOut")]),
        ("Latency and time to first segment (s)", [[ours, name, *variant, {"stat": stat}]
                                                   for name in ("RequestLatency", "TimeToFirstSegment")
                                                   for stat in ("p50", "p99")]),
        ("Audio in (s) and real-time factor", [[ours, "AudioSeconds", *variant, {"stat": "Sum"}],
                                               [ours, "RealTimeFactor", *variant, {"stat": "p50", "yAxis": "right"}]]),
        ("Engine calls", [[ours, "BatchSize", *variant, {"stat": "Average"}],
                          [ours, "EngineCallLatency", *variant, {"stat": "p99", "yAxis": "right"}],
                          [ours, "DecodeLatency", *variant, {"stat": "p99", "yAxis": "right"}]]),
        ("Live sessions", [[ours, "LiveSessions", *variant, {"stat": "Maximum"}],
                           [ours, "LiveSessionsRefused", *variant, {"stat": "Sum"}],
                           [ours, "LiveSessionsLagging", *variant, {"stat": "Sum"}]]),
        ("Worker memory and model load", [[ours, "WorkerMemory", *variant, {"stat": "Maximum"}],
                                          [ours, "GPUMemory", *variant, {"stat": "Maximum"}],
                                          [ours, "ModelLoadTime", *variant, {"stat": "Maximum", "yAxis": "right"}]]),
    ]
    body = {"widgets": [
        {"type": "metric", "x": (i % 3) * 8, "y": (i // 3) * 6, "width": 8, "height": 6,
         "properties": {"title": title, "region": region, "view": "timeSeries", "period": PERIOD_S,
                        "metrics": metrics}}
        for i, (title, metrics) in enumerate(widgets)]}
    return Request("cloudwatch", "PutDashboard", {"DashboardName": dashboard_name(endpoint),
                                                  "DashboardBody": json.dumps(body)})


def delete_dashboard(endpoint: str) -> Request:
    return Request("cloudwatch", "DeleteDashboards", {"DashboardNames": [dashboard_name(endpoint)]})


def requests_for(endpoint: str, region: str, is_async: bool, monitoring: Optional[Monitoring]) -> list[Request]:
    """Everything ``monitoring`` asks for, validated before the first call."""
    if monitoring is None:
        return []
    out = alarms(endpoint, is_async, monitoring) if monitoring.alarms else []
    if monitoring.dashboard:
        out.append(dashboard(endpoint, region, is_async, monitoring.namespace))
    return out
