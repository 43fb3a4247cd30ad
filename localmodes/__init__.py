"""Local versions of SageMaker's two offline inference modes.

SageMaker local mode needs Docker and has no asynchronous inference at all, so
users could not see batch transform or async work before paying for GPU
instances. These modules drive the same container server over HTTP exactly as
SageMaker does (``/ping``, ``/execution-parameters``, ``/invocations``), so what
works here works there:

* :mod:`localmodes.batch_transform` -- a transform job over a folder or an S3 prefix;
* :mod:`localmodes.async_endpoint` -- an InvokeEndpointAsync-compatible service
  with a persistent queue, output/failure locations and SNS-format notifications;
* :mod:`localmodes.realtime` -- one real-time invocation, for symmetry.

Locations (folders, ``file://`` and ``s3://`` URIs) go through
:mod:`localmodes.storage`; boto3 honours ``AWS_ENDPOINT_URL``, so moto or
LocalStack can stand in for S3 and SNS.
"""
