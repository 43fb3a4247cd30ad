"""Real-time lifecycle against moto: upload -> create-model -> realtime (+autoscaling)
-> invoke -> cleanup; plus the states moto cannot produce, through botocore's Stubber."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from deploy.aws import Executor
from tests._moto import IMAGE, REGION, ROLE, TEST_INSTANCE, cli, client, dry_run, make_bucket
from tests._moto import queue_realtime_results


def test_realtime_lifecycle(aws, capsys, tmp_path):
    make_bucket("whisper-models")
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"not really a tarball")

    rc, out, err = cli(capsys, "upload", str(tarball), "s3://whisper-models/tiny/")
    assert rc == 0, err
    assert out.strip() == "s3://whisper-models/tiny/model.tar.gz"
    assert client("s3").get_object(Bucket="whisper-models", Key="tiny/model.tar.gz")["Body"].read() == tarball.read_bytes()

    rc, out, err = cli(capsys, "create-model", "--name", "whisper-rt", "--image", IMAGE, "--role", ROLE,
                       "--model-data", "s3://whisper-models/tiny/model.tar.gz", "--backend", "ctranslate2",
                       "--chunk-length-s", "30", "--max-batch", "32", "--language", "en",
                       "--env", "WHISPER_BEAM_SIZE=5")
    assert rc == 0, err
    model = client("sagemaker").describe_model(ModelName="whisper-rt")
    assert model["ExecutionRoleArn"] == ROLE
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == "s3://whisper-models/tiny/model.tar.gz"
    assert container["Environment"] == {
        "WHISPER_BACKEND": "ctranslate2", "WHISPER_MODEL_DIR": "/opt/ml/model",
        "WHISPER_CHUNK_LENGTH_S": "30.0", "WHISPER_MAX_BATCH": "32", "WHISPER_LANGUAGE": "en",
        "WHISPER_BEAM_SIZE": "5"}

    rc, out, err = cli(capsys, "realtime", "--name", "whisper-rt", "--model", "whisper-rt",
                       "--config-name", "whisper-rt-c1", "--instance-type", TEST_INSTANCE, "--instance-count", "2",
                       "--startup-timeout", "900", "--download-timeout", "1200",
                       "--max-instances", "4", "--min-instances", "2", "--target-invocations", "25")
    assert rc == 0, err
    assert json.loads(out) == {"EndpointName": "whisper-rt", "EndpointConfigName": "whisper-rt-c1",
                               "EndpointStatus": "InService"}
    sm = client("sagemaker")
    variant = sm.describe_endpoint_config(EndpointConfigName="whisper-rt-c1")["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == "whisper-rt"
    assert variant["InstanceType"] == TEST_INSTANCE
    assert variant["InitialInstanceCount"] == 2
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 1200
    assert sm.describe_endpoint(EndpointName="whisper-rt")["EndpointConfigName"] == "whisper-rt-c1"

    scaling = client("application-autoscaling")
    target = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in target] == [
        ("endpoint/whisper-rt/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", 2, 4)]
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 25.0
    assert config["PredefinedMetricSpecification"] == {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}

    audio = tmp_path / "hello.wav"
    audio.write_bytes(b"RIFF....WAVEfmt ")
    queue_realtime_results(aws, "hello world")
    rc, out, err = cli(capsys, "invoke", "--endpoint", "whisper-rt", str(audio), "--accept", "text/plain",
                       "--attributes", "language=en;word_timestamps=true")
    assert rc == 0, err
    assert out == "hello world"

    rc, _, err = cli(capsys, "cleanup", "--endpoint", "whisper-rt")
    assert rc == 0, err
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


def test_invoke_request_shape(tmp_path, capsys):
    """Content type from the extension, Accept and CustomAttributes as given, body unchanged."""
    audio = tmp_path / "talk.mp3"
    audio.write_bytes(b"ID3 fake mp3")
    runtime = boto3.client("sagemaker-runtime", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(b"WEBVTT\n"), 7),
                                              "ContentType": "text/vtt"},
                          {"EndpointName": "asr", "Body": b"ID3 fake mp3", "ContentType": "audio/mpeg",
                           "Accept": "text/vtt", "CustomAttributes": "language=de"})
        ex = Executor(region=REGION, clients={"sagemaker-runtime": runtime})
        rc, out, err = cli(capsys, "invoke", "--endpoint", "asr", str(audio), "--accept", "text/vtt",
                           "--attributes", "language=de", executor=ex)
        stub.assert_no_pending_responses()
    assert rc == 0, err
    assert out == "WEBVTT\n"


def test_oversized_realtime_payload_points_to_async(tmp_path, capsys):
    audio = tmp_path / "long.wav"
    with open(audio, "wb") as handle:
        handle.truncate(6 * 1024 * 1024 + 1)
    rc, out, err = cli(capsys, "invoke", "--endpoint", "asr", str(audio), executor=Executor(region=REGION, clients={}))
    assert rc == 2
    assert out == ""
    assert "6 MB" in err and "invoke-async" in err


def _sagemaker_stub():
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return sm, Stubber(sm)


def _not_found(stub: Stubber, operation: str) -> None:
    stub.add_client_error(operation, "ValidationException", "Could not find endpoint \"asr\".")


def test_waiter_follows_creating_to_inservice(capsys):
    sm, stub = _sagemaker_stub()
    _not_found(stub, "describe_endpoint")
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"})
    stub.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/asr"},
                      {"EndpointName": "asr", "EndpointConfigName": "asr-c"})
    for status in ("Creating", "Creating", "InService"):
        stub.add_response("describe_endpoint", _endpoint(status), {"EndpointName": "asr"})
    sleeps: list[float] = []
    with stub:
        ex = Executor(region=REGION, clients={"sagemaker": sm}, sleep=sleeps.append)
        rc, out, err = cli(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c",
                           "--poll", "7", executor=ex)
        stub.assert_no_pending_responses()
    assert rc == 0, err
    assert sleeps == [7, 7]
    assert "EndpointStatus: Creating" in err and "EndpointStatus: InService" in err
    assert json.loads(out)["EndpointStatus"] == "InService"


def test_waiter_reports_failure_reason(capsys):
    sm, stub = _sagemaker_stub()
    _not_found(stub, "describe_endpoint")
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"})
    stub.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/asr"})
    stub.add_response("describe_endpoint", _endpoint("Creating"))
    stub.add_response("describe_endpoint", _endpoint("Failed", FailureReason="The primary container did not pass the ping health check"))
    with stub:
        ex = Executor(region=REGION, clients={"sagemaker": sm}, sleep=lambda s: None)
        rc, out, err = cli(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c", executor=ex)
    assert rc == 1
    assert "EndpointStatus=Failed" in err and "ping health check" in err


def test_waiter_times_out(capsys):
    sm, stub = _sagemaker_stub()
    _not_found(stub, "describe_endpoint")
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"})
    stub.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/asr"})
    for _ in range(3):
        stub.add_response("describe_endpoint", _endpoint("Creating"))
    with stub:
        ex = Executor(region=REGION, clients={"sagemaker": sm}, sleep=lambda s: None)
        rc, _, err = cli(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c",
                         "--poll", "10", "--wait-timeout", "20", executor=ex)
        stub.assert_no_pending_responses()
    assert rc == 1
    assert "still Creating after 20 s" in err


def test_existing_endpoint_is_updated_after_deregistering_scaling(capsys):
    """moto has no UpdateEndpoint: the update path (deregister, update, wait) runs on stubs."""
    sm, stub = _sagemaker_stub()
    aas = boto3.client("application-autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    cw = boto3.client("cloudwatch", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    resource = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/asr/variant/AllTraffic",
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    stub.add_response("describe_endpoint", _endpoint("InService"))
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c2"},
                      {"EndpointConfigName": "asr-c2", "ProductionVariants": ANY})
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/asr"},
                      {"EndpointName": "asr", "EndpointConfigName": "asr-c2"})
    stub.add_response("describe_endpoint", _endpoint("Updating"))
    stub.add_response("describe_endpoint", _endpoint("InService", EndpointConfigName="asr-c2"))
    with Stubber(aas) as aas_stub, Stubber(cw) as cw_stub, stub:
        aas_stub.add_response("describe_scaling_policies", {"ScalingPolicies": [_policy("asr-invocations-per-instance")]},
                              resource)
        aas_stub.add_response("delete_scaling_policy", {}, {"PolicyName": "asr-invocations-per-instance", **resource})
        aas_stub.add_response("deregister_scalable_target", {}, resource)
        cw_stub.add_response("delete_alarms", {}, {"AlarmNames": ["asr-HasBacklogWithoutCapacity"]})
        ex = Executor(region=REGION, clients={"sagemaker": sm, "application-autoscaling": aas, "cloudwatch": cw},
                      sleep=lambda s: None)
        rc, out, err = cli(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c2",
                           executor=ex)
        for s in (stub, aas_stub, cw_stub):
            s.assert_no_pending_responses()
    assert rc == 0, err
    assert "updating it to asr-c2" in err


def test_dry_run_prints_exact_requests(capsys):
    lines = dry_run(capsys, "realtime", "--name", "asr", "--model", "whisper", "--config-name", "asr-c",
                    "--max-instances", "3", "--target-invocations", "12")
    assert [(l["service"], l["operation"]) for l in lines] == [
        ("sagemaker", "CreateEndpointConfig"), ("sagemaker", "CreateEndpoint"),
        ("application-autoscaling", "RegisterScalableTarget"), ("application-autoscaling", "PutScalingPolicy")]
    variant = lines[0]["params"]["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.g5.xlarge"  # the user-facing default, whatever moto accepts
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 600
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 600
    assert lines[2]["params"]["MinCapacity"] == 1 and lines[2]["params"]["MaxCapacity"] == 3
    assert lines[3]["params"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 12.0


def test_default_config_name_is_timestamped(capsys):
    (config, endpoint) = dry_run(capsys, "realtime", "--name", "asr", "--model", "whisper")
    name = config["params"]["EndpointConfigName"]
    assert name.startswith("asr-") and len(name) == len("asr-") + 14 and name[4:].isdigit()
    assert endpoint["params"] == {"EndpointName": "asr", "EndpointConfigName": name}


def _endpoint(status: str, **extra) -> dict:
    import datetime

    now = datetime.datetime(2024, 1, 1)
    return {"EndpointName": "asr", "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/asr",
            "EndpointConfigName": "asr-c", "EndpointStatus": status, "CreationTime": now,
            "LastModifiedTime": now, **extra}


def _policy(name: str) -> dict:
    import datetime

    return {"PolicyARN": f"arn:aws:autoscaling:us-east-1:1:scalingPolicy:x:resource/sagemaker/{name}",
            "PolicyName": name, "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/asr/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "PolicyType": "TargetTrackingScaling",
            "CreationTime": datetime.datetime(2024, 1, 1)}


@pytest.mark.parametrize("extension, expected", [(".wav", "audio/wav"), (".flac", "audio/flac"),
                                                 (".m4a", "audio/mp4"), (".bin", "application/octet-stream")])
def test_content_type_from_extension(extension, expected):
    from deploy.flows import content_type_for

    assert content_type_for(f"clip{extension}") == expected
