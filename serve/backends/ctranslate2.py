"""faster-whisper (CTranslate2): the fastest engine per byte of memory.

Sequential long-form decoding by default; its batched pipeline when
``batch_size`` > 1 (which splits the audio at speech pauses with the Silero
VAD shipped in faster-whisper, so it needs ``vad_filter``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UnsupportedOptionError
from ..settings import Settings
from ..transcription import Segment, TranscribeOptions, Transcription, Word
from .base import SUPPORTED, Backend, Device


class CTranslate2Backend(Backend):
    name = "ctranslate2"
    options = {
        "language": SUPPORTED,
        "task": SUPPORTED,
        "initial_prompt": SUPPORTED,
        "temperature": SUPPORTED,
        "beam_size": SUPPORTED,
        "word_timestamps": SUPPORTED,
        "vad_filter": SUPPORTED,
        "condition_on_previous_text": SUPPORTED,
        "chunk_length_s": SUPPORTED,
        "batch_size": SUPPORTED,
    }

    @classmethod
    def load(cls, model_path: Path, settings: Settings, device: Device, model_name: str) -> "CTranslate2Backend":
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self = cls(Path(model_path), settings, device, model_name)
        self.model = WhisperModel(
            str(model_path),
            device=device.kind,
            device_index=device.index,
            compute_type=device.compute_type,
            cpu_threads=device.cpu_threads if device.kind == "cpu" else 0,
            local_files_only=True,
        )
        self.batched = BatchedInferencePipeline(self.model)
        self.english_only = not self.model.model.is_multilingual
        return self

    def check(self, options: TranscribeOptions) -> None:
        super().check(options)
        if (options.batch_size or 1) > 1 and options.vad_filter is False:
            raise UnsupportedOptionError(
                "option batch_size>1 with vad_filter=false is not supported by the ctranslate2 backend: "
                "its batched pipeline splits long audio at the pauses the VAD finds"
            )
        if options.chunk_length_s is not None and (options.batch_size or 1) == 1:
            raise UnsupportedOptionError(
                "option chunk_length_s is not supported by the ctranslate2 backend without batch_size>1: "
                "sequential decoding always uses Whisper's 30 s windows"
            )

    def _transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        kwargs = dict(
            language=options.language,
            task=options.task or "transcribe",
            beam_size=options.beam_size or 1,
            temperature=list(options.temperature or (0.0,)),
            initial_prompt=options.initial_prompt,
            word_timestamps=bool(options.word_timestamps),
            condition_on_previous_text=bool(options.condition_on_previous_text),
        )
        if (options.batch_size or 1) > 1:
            segments, info = self.batched.transcribe(
                audio, batch_size=options.batch_size, vad_filter=True,
                chunk_length=int(options.chunk_length_s) if options.chunk_length_s else None, **kwargs)
        else:
            segments, info = self.model.transcribe(audio, vad_filter=bool(options.vad_filter), **kwargs)
        out = []
        for s in segments:  # a generator: decoding happens here
            words = None
            if options.word_timestamps:
                words = tuple(Word(start=round(float(w.start), 3), end=round(float(w.end), 3), word=w.word,
                                   probability=round(float(w.probability), 4)) for w in (s.words or []))
            out.append(Segment(
                id=len(out), start=round(float(s.start), 3), end=round(float(s.end), 3), text=s.text,
                avg_logprob=float(s.avg_logprob), no_speech_prob=float(s.no_speech_prob),
                compression_ratio=float(s.compression_ratio), temperature=float(s.temperature), words=words,
            ))
        text = "".join(s.text for s in out).strip()
        return Transcription(text=text, language=info.language, duration=round(len(audio) / 16000, 3),
                             segments=tuple(out))


BACKEND = CTranslate2Backend
