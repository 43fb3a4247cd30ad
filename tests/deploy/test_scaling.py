"""Real-time autoscaling on the signals that follow the work (--scale-on concurrency / queued-audio),
against moto, with the target read from a bench result; async keeps scaling on backlog (test_async)."""

from __future__ import annotations

import json

import pytest

from tests._moto import IMAGE, ROLE, TEST_INSTANCE, cli, client, dry_run
from tests.deploy.test_capacity import SATURATED, STILL_GROWING, bench_result

RESOURCE = "endpoint/whisper-rt/variant/AllTraffic"


def _deploy(capsys, *scaling: str) -> str:
    rc, _, err = cli(capsys, "create-model", "--name", "whisper-rt", "--image", IMAGE, "--role", ROLE)
    assert rc == 0, err
    rc, out, err = cli(capsys, "realtime", "--name", "whisper-rt", "--model", "whisper-rt", "--config-name", "rt-c1",
                       "--instance-type", TEST_INSTANCE, "--max-instances", "4", "--min-instances", "1", *scaling)
    assert rc == 0, err
    assert json.loads(out)["EndpointStatus"] == "InService"
    return err


def _policy() -> dict:
    scaling = client("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (RESOURCE, 1, 4)
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and policy["ResourceId"] == RESOURCE
    return policy


def test_scale_on_concurrency(aws, capsys):
    _deploy(capsys, "--scale-on", "concurrency", "--target", "6")
    policy = _policy()
    assert policy["PolicyName"] == "whisper-rt-concurrent-requests-per-model"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 6.0
    assert config["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantConcurrentRequestsPerModelHighResolution"}
    assert (config["ScaleOutCooldown"], config["ScaleInCooldown"]) == (60, 300)


def test_scale_on_queued_audio_from_a_bench_result(aws, capsys, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_result(STILL_GROWING, SATURATED)))
    err = _deploy(capsys, "--scale-on", "queued-audio", "--target-from", str(bench), "--bench-backend", "ctranslate2",
                  "--max-wait", "20", "--workers-per-instance", "2", "--metrics-namespace", "Speech/Whisper")
    policy = _policy()
    assert policy["PolicyName"] == "whisper-rt-queued-audio-per-worker"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == pytest.approx(9.27 * 20 / 2, abs=0.05)
    assert config["CustomizedMetricSpecification"] == {
        "MetricName": "QueuedAudioSeconds", "Namespace": "Speech/Whisper",
        "Dimensions": [{"Name": "EndpointName", "Value": "whisper-rt"}, {"Name": "VariantName", "Value": "AllTraffic"}],
        "Statistic": "Average"}
    assert "scaling target 92.7 (queued-audio): ctranslate2 on cpu" in err


def test_scale_on_concurrency_from_a_hand_written_target(capsys, tmp_path):
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"metric": "concurrency", "target": 5}))
    lines = dry_run(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c", "--max-instances",
                    "2", "--scale-on", "concurrency", "--target-from", str(target))
    config = lines[-1]["params"]["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 5.0
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"].startswith("SageMakerVariantConcurrent")


def test_invocations_stay_the_default(capsys):
    lines = dry_run(capsys, "realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c",
                    "--max-instances", "2")
    config = lines[-1]["params"]["TargetTrackingScalingPolicyConfiguration"]
    assert (config["TargetValue"], config["PredefinedMetricSpecification"]) == (
        10.0, {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"})


@pytest.mark.parametrize("flags, message", [
    (("--scale-on", "concurrency"), "needs --target or --target-from"),
    (("--scale-on", "queued-audio"), "needs --target or --target-from"),
    (("--scale-on", "concurrency", "--target", "4", "--target-from", "x.json"), "not both"),
    (("--scale-on", "concurrency", "--target", "0"), "TargetValue must be greater than 0"),
    (("--scale-on", "queued-audio", "--target", "30", "--metrics-namespace", "AWS/SageMaker"), "must not start with AWS/"),
    (("--scale-on", "invocations", "--target-from", "BENCH"), "not invocations"),
])
def test_targets_that_are_not_measured_are_refused(capsys, tmp_path, flags, message):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_result(STILL_GROWING)))
    flags = tuple(str(bench) if f == "BENCH" else f for f in flags)
    rc, out, err = cli(capsys, "--dry-run", "realtime", "--name", "asr", "--model", "m", "--max-instances", "2", *flags)
    assert rc == 2, err
    assert out == ""  # refused before the first request is printed
    assert message in err


def test_a_signal_without_max_instances_is_refused(capsys):
    rc, out, err = cli(capsys, "--dry-run", "realtime", "--name", "asr", "--model", "m", "--scale-on", "concurrency",
                       "--target", "4")
    assert rc == 2 and out == ""
    assert "add --max-instances" in err
