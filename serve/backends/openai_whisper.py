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

from ..core.engine import Decoded, Device
from ..core.options import DecodeOptions
from .base import SAMPLE_RATE, Backend, alignment_frames, decoded_window, padded_log_mel, split_by_timestamps

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

    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float,
               scores: bool = False, prompts: None = None) -> list[Decoded]:
        assert prompts is None, "one prompt per call (prompt_per_window is False): the scheduler never splits it"
        import torch
        from whisper.decoding import DecodingOptions, DecodingTask, decode
        from whisper.timing import add_word_timestamps
        from whisper.tokenizer import get_tokenizer

        mel = self._mels(windows)
        decoding = DecodingOptions(
            task=options.task, language=options.language, temperature=temperature,
            best_of=BEST_OF if temperature > 0 else None,
            beam_size=options.beam_size if temperature == 0 and options.beam_size > 1 else None,
            prompt=options.initial_prompt, fp16=self.fp16)
        with torch.inference_mode():
            # With scores, the encoder runs once here: decode() and the scoring pass share its output.
            audio = self.model.encoder(mel.half() if self.fp16 else mel) if scores else mel
            results = decode(self.model, audio, decoding)
            initial = list(DecodingTask(self.model, decoding).initial_tokens) if scores else []
        out = []
        for i, (window, window_mel, result) in enumerate(zip(windows, mel, results)):
            tokenizer = get_tokenizer(self.model.is_multilingual, num_languages=self.model.num_languages,
                                      language=result.language, task=options.task)
            duration = len(window) / 16000
            pieces, resume_at = split_by_timestamps(result.tokens, tokenizer.timestamp_begin, duration)
            if options.word_timestamps and pieces:
                for p in pieces:
                    p["seek"] = 0
                with torch.inference_mode():
                    add_word_timestamps(segments=pieces, model=self.model, tokenizer=tokenizer, mel=window_mel,
                                        num_frames=alignment_frames(pieces, len(window)),
                                        last_speech_timestamp=0.0)
            token_logprobs = self._token_logprobs(audio[i], initial, result.tokens) if scores else None
            out.append(decoded_window(
                pieces, resume_at, tokenizer.decode, tokenizer.timestamp_begin, duration, language=result.language,
                avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob, text=result.text,
                temperature=temperature, token_logprobs=token_logprobs))
        return out

    def _token_logprobs(self, audio_features, initial: list[int], tokens: list[int]) -> list[float]:
        """Each token's log probability given what came before it, by one teacher-forced decoder pass."""
        import torch

        if not tokens:
            return []
        ids = torch.tensor([initial + tokens], device=audio_features.device)
        with torch.inference_mode():
            logits = self.model.decoder(ids, audio_features[None])[0].float()
        logprobs = torch.log_softmax(logits[len(initial) - 1:len(initial) - 1 + len(tokens)], dim=-1)
        return logprobs.gather(1, torch.tensor(tokens, device=logprobs.device)[:, None])[:, 0].tolist()


BACKEND = OpenAIWhisperBackend
