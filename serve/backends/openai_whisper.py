"""openai-whisper: the reference PyTorch implementation, from a ``.pt`` checkpoint.

Loads ``{"dims": ..., "model_state_dict": ...}`` exactly as
``whisper.load_model(path)`` does; long audio goes through its own
sequential 30 s-window transcription.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..settings import Settings
from ..transcription import Segment, TranscribeOptions, Transcription, Word
from .base import SUPPORTED, Backend, Device


class OpenAIWhisperBackend(Backend):
    name = "openai"
    options = {
        "language": SUPPORTED,
        "task": SUPPORTED,
        "initial_prompt": SUPPORTED,
        "temperature": SUPPORTED,
        "beam_size": SUPPORTED,
        "word_timestamps": SUPPORTED,
        "vad_filter": "openai-whisper has no voice activity detection; use the ctranslate2 backend",
        "condition_on_previous_text": SUPPORTED,
        "chunk_length_s": "openai-whisper always decodes sequential 30 s windows; use the transformers or ctranslate2 backend",
        "batch_size": "openai-whisper decodes one window at a time; use the transformers or ctranslate2 backend",
    }

    @classmethod
    def load(cls, model_path: Path, settings: Settings, device: Device, model_name: str) -> "OpenAIWhisperBackend":
        import torch
        import whisper

        from ..convert import apply_openai_alignment_heads

        if device.kind == "cpu":
            torch.set_num_threads(device.cpu_threads)
        self = cls(Path(model_path), settings, device, model_name)
        self.model = whisper.load_model(str(model_path), device=device.torch_device)
        # whisper.load_model(path) sets alignment heads only for its named downloads;
        # word timestamps need the right ones, stored beside the checkpoint.
        apply_openai_alignment_heads(self.model, Path(model_path))
        if device.compute_type in ("float16", "bfloat16"):
            self.model = self.model.to(getattr(torch, device.compute_type))
        self.english_only = not self.model.is_multilingual
        return self

    def _transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        import torch

        temperature = options.temperature or (0.0,)
        with torch.inference_mode():
            result = self.model.transcribe(
                audio,
                language=options.language or ("en" if self.english_only else None),
                task=options.task or "transcribe",
                temperature=temperature if len(temperature) > 1 else temperature[0],
                beam_size=options.beam_size if (options.beam_size or 1) > 1 else None,
                initial_prompt=options.initial_prompt,
                word_timestamps=bool(options.word_timestamps),
                condition_on_previous_text=bool(options.condition_on_previous_text),
                fp16=self.device.compute_type == "float16",
                verbose=None,
            )
        segments = []
        for s in result["segments"]:
            words = None
            if options.word_timestamps:
                words = tuple(Word(start=round(float(w["start"]), 3), end=round(float(w["end"]), 3), word=w["word"],
                                   probability=round(float(w["probability"]), 4)) for w in s.get("words", []))
            segments.append(Segment(
                id=len(segments), start=round(float(s["start"]), 3), end=round(float(s["end"]), 3), text=s["text"],
                avg_logprob=float(s["avg_logprob"]), no_speech_prob=float(s["no_speech_prob"]),
                compression_ratio=float(s["compression_ratio"]), temperature=float(s["temperature"]), words=words,
            ))
        return Transcription(text=result["text"].strip(), language=result["language"],
                             duration=round(len(audio) / 16000, 3), segments=tuple(segments))


BACKEND = OpenAIWhisperBackend
