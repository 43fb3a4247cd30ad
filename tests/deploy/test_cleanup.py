"""cleanup against moto: everything an async deployment created is removed, and a
second run (nothing left) succeeds too."""

from __future__ import annotations

from tests._moto import IMAGE, ROLE, TEST_INSTANCE, cli, client, dry_run, make_bucket


def test_cleanup_twice_removes_everything(aws, capsys):
    make_bucket("whisper-clean")
    s3 = client("s3")
    for key in ("out/1.out", "failed/2.out", "keep/3.wav"):
        s3.put_object(Bucket="whisper-clean", Key=key, Body=b"x")
    assert cli(capsys, "create-model", "--name", "whisper-clean", "--image", IMAGE, "--role", ROLE)[0] == 0
    rc, _, err = cli(capsys, "async", "--name", "whisper-clean", "--model", "whisper-clean",
                     "--config-name", "whisper-clean-c", "--instance-type", TEST_INSTANCE,
                     "--output", "s3://whisper-clean/out", "--failure", "s3://whisper-clean/failed",
                     "--max-instances", "2")
    assert rc == 0, err
    assert client("cloudwatch").describe_alarms()["MetricAlarms"]  # there is something to remove

    for attempt in (1, 2):
        rc, out, err = cli(capsys, "cleanup", "--endpoint", "whisper-clean", "--config", "whisper-clean-c",
                           "--model", "whisper-clean", "--delete-outputs")
        assert rc == 0, f"attempt {attempt}: {err}"

    sm = client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    scaling = client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="whisper-clean")["Contents"]]
    assert keys == ["keep/3.wav"]


def test_cleanup_of_nothing_succeeds(aws, capsys):
    rc, _, err = cli(capsys, "cleanup", "--endpoint", "never-created", "--config", "nope", "--model", "nope",
                     "--transform-job", "nope", "--s3-prefix", "s3://no-such-bucket/x", "--delete-outputs")
    assert rc == 0, err


def test_cleanup_order_deregisters_before_deleting(capsys):
    operations = [l["operation"] for l in dry_run(capsys, "cleanup", "--endpoint", "asr", "--config", "asr-c",
                                                  "--model", "asr")]
    assert operations == ["DescribeScalingPolicies", "DeregisterScalableTarget", "DeleteAlarms",
                          "DescribeAlarms", "DeleteAlarms", "DeleteDashboards",  # what --alarms/--dashboard made
                          "DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"]


def test_cleanup_needs_a_target(capsys):
    rc, _, err = cli(capsys, "--dry-run", "cleanup")
    assert rc == 2 and "--endpoint" in err
