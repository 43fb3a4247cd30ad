"""Every SageMaker limit is refused before any request is made (a dry run prints
nothing), with a message naming the limit; the boundary values themselves pass."""

from __future__ import annotations

import pytest

from deploy import limits
from tests._moto import cli, dry_run

ROLE = "arn:aws:iam::123456789012:role/SageMakerWhisper"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/whisper:v1"
MODEL = ["create-model", "--name", "m", "--image", IMAGE, "--role", ROLE]
RT = ["realtime", "--name", "asr", "--model", "m", "--config-name", "asr-c"]
ASYNC = ["async", "--name", "asr", "--model", "m", "--config-name", "asr-c",
         "--output", "s3://bkt/out", "--failure", "s3://bkt/fail"]
BATCH = ["batch", "--name", "job", "--model", "m", "--input", "s3://bkt/in/", "--output", "s3://bkt/out/"]
TOPIC = "arn:aws:sns:us-east-1:123456789012:done"


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """argv with ``flag`` set to ``value`` (replaced if present)."""
    if flag in argv:
        argv = list(argv)
        argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag, value]


REJECTED = [
    # names
    (_set(MODEL, "--name", "a" * 64), "ModelName must be 1 to 63 characters"),
    (["create-model", "--name=-whisper", "--image", IMAGE, "--role", ROLE], "ModelName must match"),
    (_set(MODEL, "--name", "whisper_v1"), "ModelName must match"),
    (_set(RT, "--name", "x" * 64), "EndpointName must be 1 to 63"),
    (_set(RT, "--config-name", "c" * 64), "EndpointConfigName must be 1 to 63"),
    (["realtime", "--name", "e" * 49, "--model", "m"], "EndpointConfigName must be 1 to 63"),  # NAME-<timestamp>
    (_set(RT, "--model", "bad.model"), "ModelName must match"),
    (_set(BATCH, "--name", "job-"), "TransformJobName must match"),
    (["ecr-repository", "Whisper"], "ECR repositoryName"),
    (["ecr-repository", "whisper", "--tag=-bad"], "ECR imageTag"),
    # model
    (_set(MODEL, "--role", "arn:aws:iam::123:role/x"), "ExecutionRoleArn must be an IAM role ARN"),
    (_set(MODEL, "--role", "arn:aws:iam::123456789012:user/alice"), "ExecutionRoleArn"),
    (_set(MODEL, "--image", "has space:1"), "ContainerDefinition.Image"),
    (_set(MODEL, "--image", "x" * 256), "ContainerDefinition.Image must be 1 to 255"),
    (_set(MODEL, "--model-data", "https://bkt/model.tar.gz"), "ModelDataUrl must be an S3 URI"),
    (_set(MODEL, "--model-data", "s3://Bucket/model.tar.gz"), "ModelDataUrl must be an S3 URI"),
    (_set(MODEL, "--model-data", "s3://bkt/models/"), "ModelDataUrl must name an object"),
    (_set(MODEL, "--model-data", "s3://bkt/" + "k" * 1020), "ModelDataUrl must be at most 1024"),
    (_set(MODEL, "--env", "1BAD=x"), "Environment keys must be"),
    (_set(MODEL, "--env", "K=" + "v" * 1025), "Environment values must be at most 1024"),
    ([*MODEL, *[a for i in range(100) for a in ("--env", f"K{i}=v")]], "Environment may have at most 100 entries"),
    (_set(MODEL, "--env", "WHISPER_API_KEY=sk-0123456789abcdef"), "Environment must not set WHISPER_API_KEY"),
    # hosting
    (_set(RT, "--instance-count", "0"), "InitialInstanceCount must be at least 1"),
    (_set(RT, "--instance-type", "g5.xlarge"), "InstanceType must look like ml."),
    (_set(RT, "--startup-timeout", "59"), "ContainerStartupHealthCheckTimeoutInSeconds must be between 60 and 3600"),
    (_set(RT, "--startup-timeout", "3601"), "ContainerStartupHealthCheckTimeoutInSeconds must be between 60 and 3600"),
    (_set(RT, "--download-timeout", "59"), "ModelDataDownloadTimeoutInSeconds must be between 60 and 3600"),
    (_set(RT, "--download-timeout", "3601"), "ModelDataDownloadTimeoutInSeconds must be between 60 and 3600"),
    ([*RT, "--max-instances", "2", "--min-instances", "0"], "real-time endpoints cannot scale to zero"),
    ([*RT, "--max-instances", "2", "--min-instances", "3"], "MinCapacity must be at most MaxCapacity"),
    ([*RT, "--max-instances", "0"], "MaxCapacity must be at least 1"),
    ([*RT, "--max-instances", "2", "--target-invocations", "0"], "TargetValue must be greater than 0"),
    ([*RT, "--max-instances", "2", "--no-wait"], "autoscaling can only be registered on an InService endpoint"),
    # async
    (_set(ASYNC, "--max-concurrent", "0"), "MaxConcurrentInvocationsPerInstance must be between 1 and 1000"),
    (_set(ASYNC, "--max-concurrent", "1001"), "MaxConcurrentInvocationsPerInstance must be between 1 and 1000"),
    (_set(ASYNC, "--output", "bkt/out"), "S3OutputPath must be an S3 URI"),
    (_set(ASYNC, "--failure", "s3://bkt/" + "f" * 510), "S3FailurePath must be at most 512"),
    (_set(ASYNC, "--success-topic", "arn:aws:sqs:us-east-1:123456789012:q"), "SuccessTopic must be an SNS topic ARN"),
    (_set(ASYNC, "--error-topic", "topic"), "ErrorTopic must be an SNS topic ARN"),
    ([*ASYNC, "--max-instances", "3", "--min-instances", "4"], "MinCapacity must be at most MaxCapacity"),
    # batch
    (_set(BATCH, "--max-payload-mb", "101"), "MaxPayloadInMB must be between 0 and 100"),
    (_set(BATCH, "--max-payload-mb", "-1"), "MaxPayloadInMB must be between 0 and 100"),
    (_set(_set(BATCH, "--max-payload-mb", "30"), "--max-concurrent", "4"), "MaxConcurrentTransforms x MaxPayloadInMB"),
    (_set(BATCH, "--max-concurrent", "-1"), "MaxConcurrentTransforms must be at least 0"),
    (_set(BATCH, "--invocation-timeout", "0"), "InvocationsTimeoutInSeconds must be between 1 and 3600"),
    (_set(BATCH, "--invocation-timeout", "3601"), "InvocationsTimeoutInSeconds must be between 1 and 3600"),
    (_set(BATCH, "--retries", "4"), "InvocationsMaxRetries must be between 0 and 3"),
    (_set(BATCH, "--retries", "-1"), "InvocationsMaxRetries must be between 0 and 3"),
    (_set(BATCH, "--instance-count", "0"), "TransformResources.InstanceCount must be at least 1"),
    (_set(BATCH, "--input", "s3://bkt"[:6]), "S3Uri must be an S3 URI"),
    ([*BATCH, *[a for i in range(17) for a in ("--env", f"K{i}=v")]], "CreateTransformJob.Environment may have at most 16"),
    (_set(BATCH, "--env", "WHISPER_API_KEY=sk-0123456789abcdef"),
     "CreateTransformJob.Environment must not set WHISPER_API_KEY"),
    # upload / cleanup
    (["upload", "README.md", "s3://bkt"], "S3 destination must name an object"),
    (["cleanup", "--endpoint", "asr", "--s3-prefix", "bkt/x"], "--s3-prefix must be an S3 URI"),
]


@pytest.mark.parametrize("argv, limit", REJECTED, ids=[limit for _, limit in REJECTED])
def test_limit_rejected_before_any_request(capsys, argv, limit):
    rc, out, err = cli(capsys, "--dry-run", *argv)
    assert rc == 2, err
    assert out == "", "a request was printed before the limit check"
    assert limit in err
    assert "sk-0123456789abcdef" not in err  # an API key is named, never printed


@pytest.fixture
def audio(tmp_path):
    def make(size: int):
        path = tmp_path / "clip.wav"
        with open(path, "wb") as handle:
            handle.truncate(size)  # sparse: no real gigabyte written
        return str(path)
    return make


INVOKE_REJECTED = [
    (["invoke", "--endpoint", "asr"], 6 * 1024 * 1024 + 1, [], "limited to 6 MB"),
    (["invoke", "--endpoint", "asr"], 10, ["--attributes", "a" * 1025], "CustomAttributes must be at most 1024"),
    (["invoke", "--endpoint", "asr"], 10, ["--attributes", "language=é"], "CustomAttributes must be ASCII"),
    (["invoke", "--endpoint", "a_b"], 10, [], "EndpointName must match"),
    (["invoke-async", "--endpoint", "asr", "--input-prefix", "s3://bkt/in"], 1024 ** 3 + 1, [], "limited to 1 GB"),
    (["invoke-async", "--endpoint", "asr", "--input-prefix", "s3://bkt/in"], 10, ["--invocation-timeout", "3601"],
     "InvocationTimeoutSeconds must be between 1 and 3600"),
    (["invoke-async", "--endpoint", "asr", "--input-prefix", "s3://bkt/in"], 10, ["--request-ttl", "59"],
     "RequestTTLSeconds must be between 60 and 21600"),
    (["invoke-async", "--endpoint", "asr", "--input-prefix", "s3://bkt/in"], 10, ["--request-ttl", "21601"],
     "RequestTTLSeconds must be between 60 and 21600"),
    (["invoke-async", "--endpoint", "asr", "--input-prefix", "bkt/in"], 10, [], "--input-prefix must be an S3 URI"),
]


@pytest.mark.parametrize("argv, size, extra, limit", INVOKE_REJECTED, ids=[x[3] for x in INVOKE_REJECTED])
def test_invocation_limit_rejected(capsys, audio, argv, size, extra, limit):
    rc, out, err = cli(capsys, "--dry-run", *argv, audio(size), *extra)
    assert rc == 2, err
    assert out == ""
    assert limit in err


ACCEPTED = [
    _set(_set(RT, "--startup-timeout", "60"), "--download-timeout", "3600"),
    _set(_set(RT, "--startup-timeout", "3600"), "--download-timeout", "60"),
    _set(RT, "--name", "a" * 63),
    _set(RT, "--name", "a--b"),
    _set(ASYNC, "--max-concurrent", "1000"),
    [*ASYNC, "--max-instances", "1", "--min-instances", "0"],
    _set(_set(BATCH, "--max-payload-mb", "25"), "--max-concurrent", "4"),
    _set(_set(BATCH, "--max-payload-mb", "0"), "--max-concurrent", "1000"),
    _set(_set(BATCH, "--invocation-timeout", "1"), "--retries", "0"),
    _set(_set(BATCH, "--invocation-timeout", "3600"), "--retries", "3"),
    [*MODEL, *[a for i in range(99) for a in ("--env", f"K{i}=v")]],  # + WHISPER_BACKEND = 100
]


@pytest.mark.parametrize("argv", ACCEPTED, ids=[" ".join(a[:1] + a[-2:]) for a in ACCEPTED])
def test_boundaries_accepted(capsys, argv):
    assert dry_run(capsys, *argv)


def test_realtime_payload_boundary(capsys, audio):
    lines = dry_run(capsys, "invoke", "--endpoint", "asr", audio(limits.REALTIME_PAYLOAD_MAX))
    assert lines[0]["params"]["Body"] == f"<{limits.REALTIME_PAYLOAD_MAX} bytes>"
    assert lines[0]["params"]["ContentType"] == "audio/wav"


def test_s3_uri_parsing():
    assert limits.parse_s3_uri("x", "s3://my.bucket-1/a/b.wav") == ("my.bucket-1", "a/b.wav")
    assert limits.parse_s3_uri("x", "s3://bkt") == ("bkt", "")
    with pytest.raises(limits.LimitError, match="x must be an S3 URI"):
        limits.parse_s3_uri("x", "s3://bk..t/a")
