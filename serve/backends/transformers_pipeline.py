"""Hugging Face transformers: ``pipeline("automatic-speech-recognition")``.

Loads a ``save_pretrained`` directory (or an ``HF_MODEL_ID``). Two ways to
decode long audio, both always with timestamps (without them, tiny.en ended
whole 30 s chunks after one word: a 314 s file lost 418 of 750 words):

- by default, Whisper's own sequential long-form decoding (the pipeline hands
  the whole window to ``generate``): greedy, it transcribed a 187 s file
  completely;
- with ``chunk_length_s`` or ``batch_size`` > 1, the pipeline's chunked decoding,
  ``batch_size`` chunks at a time (faster on a GPU). Chunks overlap by a
  quarter of their length on each side: with the pipeline's default sixth,
  greedy decoding dropped 4 of 56 sentences of that file; with a quarter, none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..settings import Settings
from ..transcription import Segment, TranscribeOptions, Transcription, Word
from .base import SUPPORTED, Backend, Device

DEFAULT_CHUNK_LENGTH_S = 30.0
"""Chunk length when batching is asked for without one."""
STRIDE_FRACTION = 0.25
SAMPLE_RATE = 16000
_SENTENCE_END = (".", "?", "!")


class TransformersBackend(Backend):
    name = "transformers"
    options = {
        "language": SUPPORTED,
        "task": SUPPORTED,
        "initial_prompt": "with prompt_ids the pipeline returns no segment timestamps (transformers 5.24); "
                          "use the openai or ctranslate2 backend",
        "temperature": SUPPORTED,
        "beam_size": SUPPORTED,
        "word_timestamps": SUPPORTED,
        "vad_filter": "the transformers pipeline has no voice activity detection; use the ctranslate2 backend",
        "condition_on_previous_text": "the chunked pipeline decodes each chunk on its own; "
                                      "use the openai or ctranslate2 backend",
        "chunk_length_s": SUPPORTED,
        "batch_size": SUPPORTED,
    }

    @classmethod
    def load(cls, model_path: Path | str, settings: Settings, device: Device, model_name: str) -> "TransformersBackend":
        import torch
        from transformers import pipeline

        if device.kind == "cpu":
            torch.set_num_threads(device.cpu_threads)
        self = cls(Path(model_path), settings, device, model_name)
        self.pipe = pipeline(
            settings.hf_task,
            model=str(model_path),
            device=device.torch_device,
            dtype=getattr(torch, device.compute_type),
        )
        self.english_only = not self.pipe.model.generation_config.is_multilingual
        return self

    def _transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        import torch

        generate_kwargs: dict = {}
        if not self.english_only:
            if options.language:
                generate_kwargs["language"] = options.language
            generate_kwargs["task"] = options.task or "transcribe"
        temperature = options.temperature or (0.0,)
        if temperature != (0.0,):
            generate_kwargs.update(temperature=temperature if len(temperature) > 1 else temperature[0],
                                   do_sample=True, compression_ratio_threshold=1.35, logprob_threshold=-1.0)
        # Always explicit: the ASR pipeline defaults to num_beams=5 when the
        # generation config is silent, which made "greedy" 2-3x slower.
        generate_kwargs["num_beams"] = options.beam_size or 1
        chunking: dict = {}
        if options.chunk_length_s or (options.batch_size or 1) > 1:
            chunk = options.chunk_length_s or DEFAULT_CHUNK_LENGTH_S
            chunking = dict(chunk_length_s=chunk, stride_length_s=chunk * STRIDE_FRACTION,
                            batch_size=options.batch_size or 1)
        with torch.inference_mode():
            out = self.pipe(
                audio.copy(),  # the pipeline may modify its input in place
                **chunking,
                return_timestamps="word" if options.word_timestamps else True,
                return_language=not self.english_only,
                generate_kwargs=generate_kwargs,
            )
        duration = round(len(audio) / SAMPLE_RATE, 3)
        chunks = out.get("chunks") or []
        language = "en" if self.english_only else (chunks[0].get("language") if chunks else None) or ""
        if options.word_timestamps:
            segments = _segments_from_words(chunks, duration)
        else:
            segments = tuple(
                Segment(id=i, start=_time(c["timestamp"][0], 0.0), end=_time(c["timestamp"][1], duration), text=c["text"])
                for i, c in enumerate(chunks)
            )
        return Transcription(text=out["text"].strip(), language=language, duration=duration, segments=segments)


def _time(value, fallback: float) -> float:
    # the pipeline leaves the last end time None when the audio ends mid-utterance
    return round(float(value), 3) if value is not None else fallback


def _segments_from_words(chunks: list[dict], duration: float) -> tuple[Segment, ...]:
    """Group the pipeline's per-word chunks into sentence-like segments."""
    segments: list[Segment] = []
    words: list[Word] = []
    for c in chunks:
        start = _time(c["timestamp"][0], 0.0)
        words.append(Word(start=start, end=_time(c["timestamp"][1], max(start, duration)), word=c["text"]))
        if c["text"].strip().endswith(_SENTENCE_END):
            segments.append(_segment(len(segments), words))
            words = []
    if words:
        segments.append(_segment(len(segments), words))
    return tuple(segments)


def _segment(index: int, words: list[Word]) -> Segment:
    text = "".join(w.word if w.word.startswith(" ") else " " + w.word for w in words)
    return Segment(id=index, start=words[0].start, end=words[-1].end, text=text, words=tuple(words))


BACKEND = TransformersBackend
