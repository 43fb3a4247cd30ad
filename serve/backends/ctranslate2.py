"""faster-whisper (CTranslate2): the fastest engine per byte of memory.

Batched decoding is faster-whisper's own batched generation, as its
``BatchedInferencePipeline`` does it: log-mel features of every window
stacked, one ``encode`` and one ``generate`` for the batch (with per-window
no-speech probability and scores), then word timestamps by cross-attention
alignment on the same encoder output. ``generate`` takes a prompt for each
window, so windows with different prompts share the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..core.engine import Decoded, Device
from ..core.options import DecodeOptions
from .base import Backend, alignment_frames, decoded_window, padded_log_mel, split_by_timestamps

BEST_OF = 5
"""Samples drawn per window at a temperature above 0 (Whisper's default)."""
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


class CTranslate2Backend(Backend):
    name = "ctranslate2"
    support = {name: None for name in ("language", "task", "initial_prompt", "temperature", "beam_size",
                                       "word_timestamps", "vad_filter", "condition_on_previous_text",
                                       "chunk_length_s")}
    prompt_per_window = True

    @classmethod
    def load(cls, model_path: Path | str, device: Device, model_name: str) -> "CTranslate2Backend":
        from faster_whisper import WhisperModel

        model = WhisperModel(
            str(model_path),
            device=device.kind,
            device_index=device.index,
            compute_type=device.compute_type,
            cpu_threads=device.cpu_threads if device.kind == "cpu" else 0,
            local_files_only=True,
        )
        self = cls(device, model_name, english_only=not model.model.is_multilingual)
        self.model = model
        return self

    def _tokenizer(self, options: DecodeOptions, language: str):
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task=options.task,
                         language=language)

    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float,
               scores: bool = False, prompts: Optional[Sequence[Optional[str]]] = None) -> list[Decoded]:
        from faster_whisper.transcribe import get_suppressed_tokens

        # Each window padded with silence to 30 s before the log-mel, as openai-whisper does
        # (faster-whisper's batched pipeline pads the features instead, which changes the text).
        features = np.stack([padded_log_mel(self.model.feature_extractor, w) for w in windows])
        encoder_output = self.model.encode(features)
        if options.language is None:
            # Each window's own language; windows of different languages are decoded apart,
            # so every prompt (and the word alignment) carries its window's language token.
            detected = [langs[0][0][2:-2] for langs in self.model.model.detect_language(encoder_output)]
            if len(set(detected)) > 1:
                out: list = [None] * len(windows)
                for language in dict.fromkeys(detected):
                    idx = [i for i, d in enumerate(detected) if d == language]
                    for i, result in zip(idx, self.decode([windows[i] for i in idx],
                                                          _with_language(options, language), temperature,
                                                          scores, None if prompts is None else
                                                          [prompts[i] for i in idx])):
                        out[i] = result
                return out
            language = detected[0]
        else:
            language = options.language
        tokenizer = self._tokenizer(options, language)
        if prompts is None:
            prompts = [options.initial_prompt] * len(windows)
        cached: dict[Optional[str], list[int]] = {}  # windows of one request or session share a prompt
        for text in prompts:
            if text not in cached:
                previous = tokenizer.encode(" " + text.strip()) if text else []
                cached[text] = list(self.model.get_prompt(tokenizer, previous_tokens=previous))
        sampling = dict(beam_size=1, num_hypotheses=BEST_OF, sampling_topk=0, sampling_temperature=temperature) \
            if temperature > 0 else dict(beam_size=options.beam_size, patience=1.0)
        results = self.model.model.generate(
            encoder_output, [cached[text] for text in prompts], max_length=self.model.max_length,
            return_scores=True, return_no_speech_prob=True, return_logits_vocab=scores, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]), max_initial_timestamp_index=50,
            **sampling)
        decoded, pieces_per_window = [], []
        for window, result in zip(windows, results):
            tokens = result.sequences_ids[0]
            # faster-whisper's recovery of the average log probability from the length-normalised score
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            pieces, resume_at = split_by_timestamps(tokens, tokenizer.timestamp_begin, len(window) / 16000)
            for p in pieces:
                p["seek"] = 0
            pieces_per_window.append(pieces)
            token_logprobs = _token_logprobs(result.logits[0], tokens) if scores else None
            decoded.append((tokens, avg_logprob, result.no_speech_prob, resume_at, token_logprobs))
        if options.word_timestamps and any(pieces_per_window):
            self.model.add_word_timestamps(
                pieces_per_window, tokenizer, encoder_output,
                [alignment_frames(pieces, len(w)) for w, pieces in zip(windows, pieces_per_window)],
                PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, last_speech_timestamp=0.0)
        out = []
        for window, pieces, (tokens, avg_logprob, no_speech_prob, resume_at, token_logprobs) in zip(
                windows, pieces_per_window, decoded):
            if not options.word_timestamps:
                for p in pieces:
                    p.pop("words", None)
            out.append(decoded_window(
                pieces, resume_at, tokenizer.decode, tokenizer.timestamp_begin, len(window) / 16000,
                language=language, avg_logprob=avg_logprob, no_speech_prob=no_speech_prob,
                text=tokenizer.decode([t for t in tokens if t < tokenizer.timestamp_begin]), temperature=temperature,
                token_logprobs=token_logprobs))
        return out


def _token_logprobs(logits: list, tokens: Sequence[int]) -> list[float]:
    """Each generated token's log probability, from the per-step logits generate returned
    (after its suppression masks, as the search saw them)."""
    out = []
    for step, token in zip(logits, tokens):
        v = np.asarray(step, dtype=np.float64).reshape(-1)
        top = v.max()
        out.append(float(v[token] - top - np.log(np.exp(v - top).sum())))
    return out


def _with_language(options: DecodeOptions, language: str) -> DecodeOptions:
    from dataclasses import replace

    return replace(options, language=language)


BACKEND = CTranslate2Backend
