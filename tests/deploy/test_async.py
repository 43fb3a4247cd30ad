"""Async lifecycle against moto: endpoint config with AsyncInferenceConfig, scaling
0..N on backlog with the scale-out-from-zero alarm, invoke-async polling S3."""

from __future__ import annotations

import json

from tests._moto import IMAGE, ROLE, TEST_INSTANCE, cli, client, make_bucket
from tests._moto import queue_async_results


def _deploy(capsys) -> dict:
    make_bucket("whisper-async")
    sns = client("sns")
    ok = sns.create_topic(Name="whisper-ok")["TopicArn"]
    bad = sns.create_topic(Name="whisper-bad")["TopicArn"]
    rc, _, err = cli(capsys, "create-model", "--name", "whisper-async", "--image", IMAGE, "--role", ROLE)
    assert rc == 0, err
    rc, out, err = cli(capsys, "async", "--name", "whisper-async", "--model", "whisper-async",
                       "--config-name", "whisper-async-c1", "--instance-type", TEST_INSTANCE,
                       "--output", "s3://whisper-async/out", "--failure", "s3://whisper-async/failed",
                       "--success-topic", ok, "--error-topic", bad, "--max-concurrent", "2",
                       "--max-instances", "4", "--target-backlog", "3")
    assert rc == 0, err
    assert json.loads(out)["EndpointStatus"] == "InService"
    return {"ok": ok, "bad": bad}


def test_async_endpoint_and_scale_to_zero(aws, capsys):
    topics = _deploy(capsys)
    sm = client("sagemaker")
    env = sm.describe_model(ModelName="whisper-async")["PrimaryContainer"]["Environment"]
    assert env == {"WHISPER_BACKEND": "auto"}  # no model data: the image's own model serves
    config = sm.describe_endpoint_config(EndpointConfigName="whisper-async-c1")
    assert config["AsyncInferenceConfig"] == {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
        "OutputConfig": {"S3OutputPath": "s3://whisper-async/out", "S3FailurePath": "s3://whisper-async/failed",
                         "NotificationConfig": {"SuccessTopic": topics["ok"], "ErrorTopic": topics["bad"]}},
    }
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 1  # creation needs one; scaling may reach 0

    scaling = client("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 4)
    policies = {p["PolicyName"]: p for p in scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]}
    assert set(policies) == {"whisper-async-backlog-per-instance", "whisper-async-scale-out-from-zero"}
    tracking = policies["whisper-async-backlog-per-instance"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 3.0
    assert tracking["CustomizedMetricSpecification"] == {
        "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "whisper-async"}], "Statistic": "Average"}
    step = policies["whisper-async-scale-out-from-zero"]
    assert step["PolicyType"] == "StepScaling"
    assert step["StepScalingPolicyConfiguration"]["AdjustmentType"] == "ChangeInCapacity"
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]

    (alarm,) = client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert alarm["AlarmName"] == "whisper-async-HasBacklogWithoutCapacity"
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "whisper-async"}]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1.0
    assert alarm["AlarmActions"] == [step["PolicyARN"]]


def test_invoke_async_returns_output(aws, capsys, tmp_path):
    _deploy(capsys)
    audio = tmp_path / "meeting.flac"
    audio.write_bytes(b"fLaC fake")
    queue_async_results(aws, (False, "the transcript"))
    rc, out, err = cli(capsys, "invoke-async", "--endpoint", "whisper-async", str(audio),
                       "--input-prefix", "s3://whisper-async/in", "--accept", "text/plain",
                       "--attributes", "language=en", "--invocation-timeout", "1800", "--request-ttl", "3600")
    assert rc == 0, err
    assert out == "the transcript"
    inputs = client("s3").list_objects_v2(Bucket="whisper-async", Prefix="in/")["Contents"]
    assert [o["Key"].rsplit("/", 1)[-1] for o in inputs] == ["meeting.flac"]
    assert client("s3").get_object(Bucket="whisper-async", Key=inputs[0]["Key"])["Body"].read() == b"fLaC fake"


def test_invoke_async_reports_failure_location(aws, capsys, tmp_path):
    _deploy(capsys)
    audio = tmp_path / "broken.wav"
    audio.write_bytes(b"nope")
    queue_async_results(aws, (True, "ffmpeg could not decode the input"))
    rc, out, err = cli(capsys, "invoke-async", "--endpoint", "whisper-async", str(audio),
                       "--input-prefix", "s3://whisper-async/in")
    assert rc == 1
    assert out == ""
    assert "async inference failed" in err and "ffmpeg could not decode the input" in err


def test_async_dry_run_request_order(capsys):
    from tests._moto import dry_run

    lines = dry_run(capsys, "async", "--name", "asr", "--model", "m", "--config-name", "asr-c",
                    "--output", "s3://bkt/out", "--failure", "s3://bkt/fail", "--max-instances", "2")
    assert [l["operation"] for l in lines] == ["CreateEndpointConfig", "CreateEndpoint", "RegisterScalableTarget",
                                               "PutScalingPolicy", "PutScalingPolicy", "PutMetricAlarm"]
    assert lines[0]["params"]["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    assert "NotificationConfig" not in lines[0]["params"]["AsyncInferenceConfig"]["OutputConfig"]
    assert lines[2]["params"]["MinCapacity"] == 0
