"""openai-whisper: the reference PyTorch implementation, from a ``.pt`` checkpoint.

Loads ``{"dims": ..., "model_state_dict": ...}`` exactly as
``whisper.load_model(path)`` does. Batched decoding is openai-whisper's own
``decode()`` on a batch of log-mel windows; word timestamps are its
cross-attention alignment, window by window.

Precision: the weights stay float32 whatever WHISPER_COMPUTE_TYPE says. With
float16, activations run in half precision (``fp16=True``), as
``whisper.transcribe`` does: its LayerNorm computes in float32 and casts back,
which fails on float16 weights ("expected scalar type Float but found Half").
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.options import DecodeOptions, Options
from ..core.results import Segment, Transcription, Word
from .base import (SAMPLE_RATE, Backend, Decoded, Device, padded_log_mel, segments_from_pieces,
                   split_by_timestamps, window_stats)

BEST_OF = 5


class OpenAIWhisperBackend(Backend):
    name = "openai"
    support = {name: None for name in ("language", "task", "initial_prompt", "temperature", "beam_size",
                                       "word_timestamps", "vad_filter", "condition_on_previous_text",
                                       "chunk_length_s")}

    @classmethod
    def load(cls, model_path: Path | str, device: Device, model_name: str) -> "OpenAIWhisperBackend":
        import torch
        import whisper

        from ..models.convert import apply_openai_alignment_heads

        if device.kind == "cpu":
            torch.set_num_threads(device.cpu_threads)
        model = whisper.load_model(str(model_path), device=device.torch_device)
        # whisper.load_model(path) sets alignment heads only for its named downloads;
        # word timestamps need the right ones, stored beside the checkpoint.
        apply_openai_alignment_heads(model, Path(model_path))
        self = cls(device, model_name, english_only=not model.is_multilingual)
        self.model = model
        self.fp16 = device.compute_type == "float16"
        return self

    def _mels(self, windows: Sequence[np.ndarray]):
        import torch
        from whisper.audio import log_mel_spectrogram

        def log_mel(audio: np.ndarray):  # 1 s of silence after: each frame sees what it would in the whole file
            return log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(audio)), self.model.dims.n_mels,
                                       padding=SAMPLE_RATE, device=self.model.device)

        return torch.stack([padded_log_mel(log_mel, w) for w in windows])

    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float) -> list[Decoded]:
        import torch
        from whisper.decoding import DecodingOptions, decode
        from whisper.timing import add_word_timestamps
        from whisper.tokenizer import get_tokenizer

        mel = self._mels(windows)
        decoding = DecodingOptions(
            task=options.task, language=options.language, temperature=temperature,
            best_of=BEST_OF if temperature > 0 else None,
            beam_size=options.beam_size if temperature == 0 and options.beam_size > 1 else None,
            prompt=options.initial_prompt, fp16=self.fp16)
        with torch.inference_mode():
            results = decode(self.model, mel, decoding)
        out = []
        for window, window_mel, result in zip(windows, mel, results):
            tokenizer = get_tokenizer(self.model.is_multilingual, num_languages=self.model.num_languages,
                                      language=result.language, task=options.task)
            duration = len(window) / 16000
            pieces, resume_at = split_by_timestamps(result.tokens, tokenizer.timestamp_begin, duration)
            if options.word_timestamps and pieces:
                for p in pieces:
                    p["seek"] = 0
                with torch.inference_mode():
                    add_word_timestamps(segments=pieces, model=self.model, tokenizer=tokenizer, mel=window_mel,
                                        num_frames=min(len(window) // 160, mel.shape[-1]),
                                        last_speech_timestamp=0.0)
            stats = window_stats(result.avg_logprob, result.no_speech_prob, result.text, temperature)
            segments = segments_from_pieces(pieces, tokenizer.decode, tokenizer.timestamp_begin, stats, duration)
            out.append(Decoded(segments, result.language, stats["avg_logprob"], stats["no_speech_prob"],
                               stats["compression_ratio"], temperature, resume_at))
        return out

    def transcribe(self, audio: np.ndarray, options: Options) -> Transcription:
        import torch

        d = options.decode
        with torch.inference_mode():
            result = self.model.transcribe(
                audio, language=d.language, task=d.task,
                temperature=d.temperatures if len(d.temperatures) > 1 else d.temperatures[0],
                beam_size=d.beam_size if d.beam_size > 1 else None, initial_prompt=d.initial_prompt,
                word_timestamps=d.word_timestamps, condition_on_previous_text=options.condition_on_previous_text,
                fp16=self.fp16, verbose=None)
        segments = []
        for s in result["segments"]:
            words = None
            if d.word_timestamps:
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
