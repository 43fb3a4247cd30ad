"""Dated prices for ``whisper-deploy estimate``: SageMaker instances and hosted transcription APIs.

On-demand USD, us-east-1, read on :data:`READ_ON` with the search tool of this project's
workspace (AWS's own pricing page, https://aws.amazon.com/sagemaker-ai/pricing/, is rendered
by script and was not readable there). Each figure names where it was read; a figure that
two independent sources agree on says so. Where no source gave a figure, the table holds
``None`` and the estimator asks for ``--price-per-hour`` rather than guessing. Verify
against the AWS Pricing Calculator before you budget on them.

Async endpoints bill the same instance-hours as real-time endpoints (one hosting price);
batch transform has its own price list, found here for no instance in us-east-1: the
estimator then uses the hosting price and says so (the us-west-2 Price List figures seen
for ml.g5 were equal to the hosting ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

READ_ON = "2026-12-04"
REGION = "us-east-1"

FMBENCH = ("aws-samples/foundation-model-benchmarking-tool, fmbench/configs/pricing.yml "
           "(SageMaker hourly instance pricing, last changed 2025-01-26, commit d8814208)")
PRICE_LIST_2026 = ("a public cost model quoting the AWS Price List API for SageMaker, us-east-1, "
                   "captured 2026-08-17 (found by content; its repository was not shown)")
BLOGS_2025 = "zircon.tech and cloudmess.io SageMaker cost posts (ml.g5.xlarge 'about $1.41/hour', us-east-1, Oct 2025)"


@dataclass(frozen=True)
class InstancePrice:
    instance_type: str
    hosting: Optional[float]  # real-time and async endpoints, $ per instance-hour
    batch: Optional[float]  # batch transform, $ per instance-hour; None: not found
    accelerator: str
    source: str


INSTANCES: dict[str, InstancePrice] = {p.instance_type: p for p in (
    InstancePrice("ml.g5.xlarge", 1.408, None, "1x A10G 24 GB", f"{FMBENCH}; {PRICE_LIST_2026}; {BLOGS_2025}"),
    InstancePrice("ml.g5.2xlarge", 1.515, None, "1x A10G 24 GB", f"{FMBENCH}; {PRICE_LIST_2026}"),
    InstancePrice("ml.g6.xlarge", None, None, "1x L4 24 GB",
                  "not found for us-east-1 (a us-west-2 Price List copy gave 1.127 training, 1.1267 batch)"),
    InstancePrice("ml.g6.2xlarge", 1.222, None, "1x L4 24 GB", FMBENCH),
    InstancePrice("ml.g6e.xlarge", 2.61, None, "1x L40S 48 GB", PRICE_LIST_2026),
    InstancePrice("ml.g6e.2xlarge", 2.80, None, "1x L40S 48 GB", PRICE_LIST_2026),
    InstancePrice("ml.p4d.24xlarge", 37.688, None, "8x A100 40 GB",
                  f"{FMBENCH}; wring.co SageMaker inference guide ($37.69)"),
    InstancePrice("ml.c7i.xlarge", 0.214, None, "CPU, 4 vCPU", FMBENCH),
    InstancePrice("ml.c7i.2xlarge", None, None, "CPU, 8 vCPU", "not found"),
)}


@dataclass(frozen=True)
class HostedPrice:
    name: str
    per_minute: float  # $ per audio minute
    source: str


HOSTED: tuple[HostedPrice, ...] = (
    HostedPrice("OpenAI whisper-1", 0.006,
                "billed per audio minute: openrouter.ai/openai/whisper-1 listing OpenAI's price; "
                "OpenAI's pricing page itself was not readable here"),
    HostedPrice("OpenAI gpt-4o-transcribe", 0.006,
                "billed per token ($2.50 / 1M audio input tokens, $10 / 1M output, "
                "developers.openai.com/api/docs/models/gpt-4o-transcribe); $0.006 a minute is OpenAI's "
                "estimate as quoted by tokenmix.ai (April 2026)"),
    HostedPrice("OpenAI gpt-4o-mini-transcribe", 0.003,
                "billed per token; $0.003 a minute is OpenAI's estimate as quoted by tokenmix.ai "
                "(April 2026) and halfpower.work"),
)
