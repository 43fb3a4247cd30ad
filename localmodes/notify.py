"""Success and error notifications in SageMaker async inference's SNS message format.

SageMaker publishes one JSON message per finished request to the endpoint's
SuccessTopic or ErrorTopic. Code that consumes those (a Lambda, an SQS
poller) should run unchanged against the local service, so the message is
built field for field as the SageMaker developer guide shows it
("Check prediction results"):

    {"awsRegion", "eventTime", "receivedTime", "invocationStatus": "Completed"|"Failed",
     "requestParameters": {"accept", "contentType", "customAttributes", "endpointName", "inputLocation"},
     "responseParameters": {"contentType", "sentContentLength", "outputLocation"},
     "inferenceId", "eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "InferenceResult",
     "outputLocation" | "failureLocation", "failureReason" (failures only)}

The guide's example carries ``outputLocation`` inside ``responseParameters``;
other published examples carry it at the top level, so we write both and a
consumer written against either form works. ``responseParameters`` appears on
a failure only when the model answered (with an error body).

Where notifications go (``--notify``, repeatable):

* ``file:PATH`` -- one message per line (JSON lines), for looking at;
* ``http://...`` -- POSTed as an SNS HTTP(S) subscription receives it: the
  ``{"Type": "Notification", "Message": "<the message as a string>", ...}``
  envelope (unsigned);
* ``sns:SUCCESS_ARN,ERROR_ARN`` -- published to real SNS, or moto's (either ARN may be empty).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Protocol

import requests

from . import storage
from .async_queue import Request

log = logging.getLogger(__name__)

COMPLETED, FAILED = "Completed", "Failed"


def iso_time(epoch: float) -> str:
    """SageMaker's timestamp form: ``2022-01-25T22:46:00.608Z``."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_message(request: Request, status: str, region: str, event_time: float,
                  response_content_type: Optional[str] = None, sent_content_length: Optional[int] = None,
                  failure_reason: Optional[str] = None) -> dict:
    """The notification for one finished request."""
    request_parameters = {"accept": request.accept or "*/*", "contentType": request.content_type,
                          "customAttributes": request.custom_attributes, "endpointName": request.endpoint_name,
                          "inputLocation": request.input_location}
    message: dict = {
        "awsRegion": region,
        "eventTime": iso_time(event_time),
        "receivedTime": iso_time(request.received_time),
        "invocationStatus": status,
        "requestParameters": {k: v for k, v in request_parameters.items() if v is not None},
    }
    if response_content_type is not None:
        message["responseParameters"] = {"contentType": response_content_type,
                                         "sentContentLength": sent_content_length}
    if status == COMPLETED:
        message["responseParameters"]["outputLocation"] = request.output_location
    message.update({"inferenceId": request.inference_id, "eventVersion": "1.0",
                    "eventSource": "aws:sagemaker", "eventName": "InferenceResult"})
    if status == COMPLETED:
        message["outputLocation"] = request.output_location
    else:
        message["failureReason"] = failure_reason
        message["failureLocation"] = request.failure_location
    return message


class Sink(Protocol):
    def send(self, message: dict) -> None: ...


class FileSink:
    """Appends each message as one JSON line."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


class WebhookSink:
    """POSTs the message wrapped as SNS delivers it to an HTTP subscription."""

    def __init__(self, url: str, region: str):
        self.url = url
        self.region = region

    def send(self, message: dict) -> None:
        topic = "success" if message["invocationStatus"] == COMPLETED else "error"
        envelope = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": f"arn:aws:sns:{self.region}:000000000000:local-async-{topic}",
            "Message": json.dumps(message),
            "Timestamp": message["eventTime"],
            "SignatureVersion": "1",
        }
        requests.post(self.url, json=envelope, timeout=10,
                      headers={"x-amz-sns-message-type": "Notification"}).raise_for_status()


class SnsSink:
    """Publishes to the SuccessTopic / ErrorTopic, as the endpoint's NotificationConfig would."""

    def __init__(self, success_topic: Optional[str], error_topic: Optional[str]):
        self.success_topic = success_topic or None
        self.error_topic = error_topic or None

    def send(self, message: dict) -> None:
        topic = self.success_topic if message["invocationStatus"] == COMPLETED else self.error_topic
        if topic:
            storage.sns_client().publish(TopicArn=topic, Message=json.dumps(message))


def parse_sink(spec: str, region: str) -> Sink:
    if spec.startswith("file:"):
        return FileSink(spec[len("file:"):])
    if spec.startswith(("http://", "https://")):
        return WebhookSink(spec, region)
    if spec.startswith("sns:"):
        success, _, error = spec[len("sns:"):].partition(",")
        return SnsSink(success.strip(), error.strip())
    raise ValueError(f"unknown notification target {spec!r}: use file:PATH, http(s)://URL or sns:SUCCESS_ARN,ERROR_ARN")


class Notifier:
    """Sends each message to every sink; a sink that fails is logged, never fatal.

    A notification is a courtesy: the output or failure object is already
    written when it goes out, so losing one must not fail the request.
    """

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def send(self, message: dict) -> None:
        for sink in self.sinks:
            try:
                sink.send(message)
            except Exception:
                log.exception("notification to %s failed", type(sink).__name__)
