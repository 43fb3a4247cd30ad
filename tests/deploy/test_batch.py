"""Batch transform against moto (create, wait, list .out), with the pre-flight input
checks; failure states and stop_transform_job, which moto lacks, on Stubber."""

from __future__ import annotations

import datetime

import boto3
from botocore.stub import Stubber

from deploy.aws import Executor
from tests._moto import IMAGE, REGION, ROLE, TEST_INSTANCE, cli, client, dry_run, make_bucket


def _model(capsys) -> None:
    rc, _, err = cli(capsys, "create-model", "--name", "whisper-batch", "--image", IMAGE, "--role", ROLE)
    assert rc == 0, err


def test_batch_lifecycle(aws, capsys):
    make_bucket("whisper-batch")
    s3 = client("s3")
    for key in ("in/a.wav", "in/sub/b.mp3"):
        s3.put_object(Bucket="whisper-batch", Key=key, Body=b"audio")
    # moto never runs the container: put what SageMaker would write next to a stray file.
    for key in ("out/a.wav.out", "out/sub/b.mp3.out", "out/_manifest"):
        s3.put_object(Bucket="whisper-batch", Key=key, Body=b"{}")
    _model(capsys)

    rc, out, err = cli(capsys, "batch", "--name", "whisper-job-1", "--model", "whisper-batch",
                       "--input", "s3://whisper-batch/in/", "--output", "s3://whisper-batch/out/",
                       "--instance-type", TEST_INSTANCE, "--instance-count", "2", "--accept", "text/vtt",
                       "--max-payload-mb", "50", "--max-concurrent", "2", "--invocation-timeout", "1800",
                       "--retries", "2", "--env", "WHISPER_LANGUAGE=en")
    assert rc == 0, err
    assert out.split() == ["s3://whisper-batch/out/a.wav.out", "s3://whisper-batch/out/sub/b.mp3.out"]

    job = client("sagemaker").describe_transform_job(TransformJobName="whisper-job-1")
    assert job["TransformJobStatus"] == "Completed"
    assert job["ModelName"] == "whisper-batch"
    assert job["MaxPayloadInMB"] == 50
    assert job["MaxConcurrentTransforms"] == 2
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 1800, "InvocationsMaxRetries": 2}
    assert job["Environment"] == {"WHISPER_LANGUAGE": "en"}
    assert job["TransformInput"]["SplitType"] == "None"
    assert job["TransformInput"]["DataSource"] == {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                    "S3Uri": "s3://whisper-batch/in/"}}
    assert job["TransformOutput"]["Accept"] == "text/vtt"
    assert job["TransformOutput"]["S3OutputPath"] == "s3://whisper-batch/out/"
    assert job["TransformResources"] == {"InstanceType": TEST_INSTANCE, "InstanceCount": 2}


def test_batch_refuses_object_over_max_payload(aws, capsys):
    make_bucket("whisper-batch")
    client("s3").put_object(Bucket="whisper-batch", Key="in/big.wav", Body=b"x" * (1024 * 1024 + 1))
    _model(capsys)
    rc, _, err = cli(capsys, "batch", "--name", "job", "--model", "whisper-batch", "--input", "s3://whisper-batch/in/",
                     "--output", "s3://whisper-batch/out/", "--instance-type", TEST_INSTANCE, "--max-payload-mb", "1")
    assert rc == 2
    assert "MaxPayloadInMB (1 MB)" in err and "in/big.wav" in err
    assert client("sagemaker").list_transform_jobs()["TransformJobSummaries"] == []


def test_batch_refuses_empty_input(aws, capsys):
    make_bucket("whisper-batch")
    _model(capsys)
    rc, _, err = cli(capsys, "batch", "--name", "job", "--model", "whisper-batch", "--input", "s3://whisper-batch/in/",
                     "--output", "s3://whisper-batch/out/", "--instance-type", TEST_INSTANCE)
    assert rc == 2
    assert "at least one object" in err


def _job(status: str, **extra) -> dict:
    now = datetime.datetime(2024, 1, 1)
    return {"TransformJobName": "job", "TransformJobArn": "arn:aws:sagemaker:us-east-1:1:transform-job/job",
            "TransformJobStatus": status, "ModelName": "whisper-batch", "CreationTime": now,
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}},
            "TransformOutput": {"S3OutputPath": "s3://bkt/out"},
            "TransformResources": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1}, **extra}


def _stubbed():
    creds = {"region_name": REGION, "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    sm, s3 = boto3.client("sagemaker", **creds), boto3.client("s3", **creds)
    return sm, s3, Stubber(sm), Stubber(s3)


def test_batch_failure_reason_is_reported(capsys):
    sm, s3, sm_stub, s3_stub = _stubbed()
    s3_stub.add_response("list_objects_v2", {"Contents": [{"Key": "in/a.wav", "Size": 10}], "IsTruncated": False},
                         {"Bucket": "bkt", "Prefix": "in"})
    sm_stub.add_response("create_transform_job", {"TransformJobArn": "arn:aws:sagemaker:us-east-1:1:transform-job/job"})
    sm_stub.add_response("describe_transform_job", _job("InProgress"))
    sm_stub.add_response("describe_transform_job", _job("Failed", FailureReason="ClientError: 413 payload too large"))
    with sm_stub, s3_stub:
        ex = Executor(region=REGION, clients={"sagemaker": sm, "s3": s3}, sleep=lambda s: None)
        rc, out, err = cli(capsys, "batch", "--name", "job", "--model", "m", "--input", "s3://bkt/in",
                           "--output", "s3://bkt/out", executor=ex)
        sm_stub.assert_no_pending_responses()
    assert rc == 1
    assert "TransformJobStatus=Failed" in err and "413 payload too large" in err


def test_cleanup_stops_running_transform_job(capsys):
    sm, s3, sm_stub, _ = _stubbed()
    sm_stub.add_response("describe_transform_job", _job("InProgress"), {"TransformJobName": "job"})
    sm_stub.add_response("stop_transform_job", {}, {"TransformJobName": "job"})
    sm_stub.add_response("delete_model", {}, {"ModelName": "whisper-batch"})
    with sm_stub:
        ex = Executor(region=REGION, clients={"sagemaker": sm}, sleep=lambda s: None)
        rc, _, err = cli(capsys, "cleanup", "--transform-job", "job", executor=ex)
        sm_stub.assert_no_pending_responses()
    assert rc == 0, err
    assert "stopping transform job job" in err


def test_batch_dry_run_request(capsys):
    (job,) = dry_run(capsys, "batch", "--name", "job", "--model", "m", "--input", "s3://bkt/in/",
                     "--output", "s3://bkt/out/")
    assert job["service"] == "sagemaker" and job["operation"] == "CreateTransformJob"
    params = job["params"]
    assert params["MaxPayloadInMB"] * params["MaxConcurrentTransforms"] <= 100
    assert params["TransformInput"]["SplitType"] == "None"
    assert params["TransformResources"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1}
    assert params["TransformOutput"]["Accept"] == "application/json"
    assert params["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 3600, "InvocationsMaxRetries": 1}
