"""Failure paths found in review: updates that do not take, Failed endpoints, partial
S3 deletes, upload failures and invoke-async --no-wait --out -- on Stubber or fakes."""

from __future__ import annotations

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.stub import ANY, Stubber

from deploy import flows
from deploy import requests as rq
from deploy.aws import Executor, PartialFailure
from tests._moto import REGION, cli
from tests.deploy.test_async import _deploy
from tests.deploy.test_realtime import _endpoint, _sagemaker_stub


def _update_stubs(stub: Stubber) -> None:
    stub.add_response("describe_endpoint", _endpoint("InService"))
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c2"},
                      {"EndpointConfigName": "asr-c2", "ProductionVariants": ANY})
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/asr"},
                      {"EndpointName": "asr", "EndpointConfigName": "asr-c2"})


class _NoScaling:
    """application-autoscaling / cloudwatch with nothing registered."""

    def describe_scaling_policies(self, **_):
        return {"ScalingPolicies": []}

    def deregister_scalable_target(self, **_):
        return {}

    def delete_alarms(self, **_):
        return {}


def _executor(sm, sleeps=None) -> Executor:
    return Executor(region=REGION, clients={"sagemaker": sm, "application-autoscaling": _NoScaling(),
                                            "cloudwatch": _NoScaling()},
                    sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_update_waits_until_the_endpoint_runs_the_new_config(capsys):
    sm, stub = _sagemaker_stub()
    _update_stubs(stub)
    stub.add_response("describe_endpoint", _endpoint("InService"))  # the update is not visible yet
    stub.add_response("describe_endpoint", _endpoint("Updating"))
    stub.add_response("describe_endpoint", _endpoint("InService", EndpointConfigName="asr-c2"))
    sleeps: list[float] = []
    with stub:
        rc, out, err = cli(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c2",
                           executor=_executor(sm, sleeps))
        stub.assert_no_pending_responses()
    assert rc == 0, err
    assert len(sleeps) == 2


def test_update_rolled_back_to_the_old_config_is_an_error(capsys):
    sm, stub = _sagemaker_stub()
    _update_stubs(stub)
    stub.add_response("describe_endpoint", _endpoint("Updating"))
    stub.add_response("describe_endpoint", _endpoint("InService", FailureReason="ping health check failed"))
    with stub:
        rc, out, err = cli(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c2",
                           executor=_executor(sm))
        stub.assert_no_pending_responses()
    assert rc == 1
    assert "asr-c2 failed" in err and "InService on asr-c again" in err and "ping health check failed" in err


def test_a_failed_endpoint_is_refused_before_any_change(capsys):
    sm, stub = _sagemaker_stub()
    stub.add_response("describe_endpoint", _endpoint("Failed", FailureReason="out of capacity"))
    with stub:  # no CreateEndpointConfig / UpdateEndpoint stubbed: calling them would fail differently
        rc, out, err = cli(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c2",
                           executor=_executor(sm))
        stub.assert_no_pending_responses()
    assert rc == 1
    assert "Failed" in err and "out of capacity" in err and "cleanup --endpoint asr" in err


def test_delete_prefix_reports_keys_it_could_not_delete():
    s3 = boto3.client("s3", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", {"Contents": [{"Key": "out/a.out"}, {"Key": "out/b.out"}],
                                              "IsTruncated": False})
        stub.add_response("delete_objects", {"Deleted": [{"Key": "out/a.out"}],
                                             "Errors": [{"Key": "out/b.out", "Code": "AccessDenied",
                                                         "Message": "Access Denied"}]})
        with pytest.raises(PartialFailure, match=r"1 of 2 .*out/b.out \(AccessDenied"):
            flows.delete_prefix(Executor(region=REGION, clients={"s3": s3}), "s3://bkt/out/", lambda m: None)


def test_delete_objects_refuses_more_than_1000_keys():
    assert len(rq.delete_objects("bkt", [f"k{i}" for i in range(1000)]).params["Delete"]["Objects"]) == 1000
    with pytest.raises(ValueError, match="at most 1000"):
        rq.delete_objects("bkt", [f"k{i}" for i in range(1001)])


def test_upload_failure_is_a_clear_error_not_a_traceback(capsys, tmp_path):
    class FailingS3:
        def upload_file(self, **_):
            raise S3UploadFailedError("Failed to upload x to bkt/k: An error occurred (AccessDenied)")

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    rc, out, err = cli(capsys, "upload", str(audio), "s3://bkt/k",
                       executor=Executor(region=REGION, clients={"s3": FailingS3()}))
    assert rc == 1
    assert "whisper-deploy: error: Failed to upload" in err and "Traceback" not in err


def test_invoke_async_no_wait_prints_the_location_and_writes_no_out_file(aws, capsys, tmp_path):
    _deploy(capsys)
    audio = tmp_path / "meeting.flac"
    audio.write_bytes(b"fLaC fake")
    out_file = tmp_path / "transcript.txt"
    rc, out, err = cli(capsys, "invoke-async", "--endpoint", "whisper-async", str(audio),
                       "--input-prefix", "s3://whisper-async/in", "--no-wait", "--out", str(out_file))
    assert rc == 0, err
    assert out.strip().startswith("s3://")
    assert not out_file.exists()
