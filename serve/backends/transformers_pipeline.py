"""Hugging Face transformers: ``WhisperForConditionalGeneration.generate``.

Loads a ``save_pretrained`` directory (or an ``HF_MODEL_ID``). Batched
decoding is ``generate`` on the stacked log-mel features of the windows, with
timestamps (without them, tiny.en ended whole 30 s chunks after one word) and,
when asked, token timestamps from cross-attention for the words. The encoder
runs once; a teacher-forced pass over the generated tokens gives Whisper's
per-window scores (average log probability, no-speech probability), which
``generate`` does not return for short audio.

A prompt (``initial_prompt``, or the previous text of a sequential request)
goes in as ``prompt_ids``; ``generate`` returns it in front of the
transcript, so the tokens up to the start of transcript are the prompt, not
text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..core.engine import Decoded, Device
from ..core.options import DecodeOptions
from .base import SAMPLE_RATE, Backend, decoded_window, padded_log_mel, split_by_timestamps


class TransformersBackend(Backend):
    name = "transformers"
    support = {name: None for name in ("language", "task", "initial_prompt", "temperature", "beam_size",
                                       "word_timestamps", "vad_filter", "condition_on_previous_text",
                                       "chunk_length_s")}

    @classmethod
    def load(cls, model_path: Path | str, device: Device, model_name: str) -> "TransformersBackend":
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        if device.kind == "cpu":
            torch.set_num_threads(device.cpu_threads)
        dtype = getattr(torch, device.compute_type)
        model = WhisperForConditionalGeneration.from_pretrained(str(model_path), dtype=dtype)
        model = model.to(device.torch_device).eval()
        self = cls(device, model_name, english_only=not model.generation_config.is_multilingual)
        self.model, self.dtype = model, dtype
        self.processor = WhisperProcessor.from_pretrained(str(model_path))
        tokenizer = self.processor.tokenizer
        # the first timestamp token follows <|notimestamps|> (a converted tokenizer may not name them)
        self.timestamp_begin = model.generation_config.no_timestamps_token_id + 1
        self.no_speech_id = next(i for i in (tokenizer.convert_tokens_to_ids(t) for t in ("<|nospeech|>",
                                                                                            "<|nocaptions|>"))
                                 if i is not None and i != tokenizer.unk_token_id)
        return self

    def _generate_kwargs(self, options: DecodeOptions, temperature: float) -> dict:
        kwargs: dict = {"return_timestamps": True, "num_beams": options.beam_size if temperature == 0 else 1}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=0.0)
        if not self.english_only:
            kwargs["task"] = options.task
            if options.language:
                kwargs["language"] = options.language
        return kwargs

    def decode(self, windows: Sequence[np.ndarray], options: DecodeOptions, temperature: float,
               scores: bool = False, prompts: None = None) -> list[Decoded]:
        assert prompts is None, "one prompt per call (prompt_per_window is False): the scheduler never splits it"
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        def log_mel(audio: np.ndarray) -> np.ndarray:
            return self.processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, padding="longest",
                                                    return_tensors="np").input_features[0]

        features = torch.from_numpy(np.stack([padded_log_mel(log_mel, w) for w in windows])).to(
            self.model.device, self.dtype)
        kwargs = self._generate_kwargs(options, temperature)
        if options.initial_prompt:
            kwargs["prompt_ids"] = self.processor.get_prompt_ids(options.initial_prompt.strip(),
                                                                 return_tensors="pt").to(self.model.device)
        start = self.model.generation_config.decoder_start_token_id
        with torch.inference_mode():
            encoded = self.model.model.encoder(features).last_hidden_state
            # One generate call (no seeking inside a window: the scheduler decodes what is left again).
            out = self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoded), force_unique_generate_call=True,
                return_token_timestamps=options.word_timestamps, **kwargs)
        sequences = out["sequences"] if options.word_timestamps else out
        eot = self.model.generation_config.eos_token_id
        tokenizer = self.processor.tokenizer
        results = []
        prompt = kwargs["prompt_ids"].tolist() if "prompt_ids" in kwargs else []
        for i, window in enumerate(windows):
            duration = len(window) / SAMPLE_RATE
            ids = [int(t) for t in sequences[i].tolist()]
            given = len(prompt) if prompt and ids[:len(prompt)] == prompt else 0  # generate returns it first
            head = given
            while head < len(ids) and eot <= ids[head] < self.timestamp_begin:
                head += 1  # the decoder prompt (start of transcript, language, task)
            stop = next((j for j in range(head, len(ids)) if ids[j] == eot), len(ids))
            # what the decoder saw before the first token: the prompt, the start of transcript, the task tokens
            prefix = prompt + ([] if ids[given:given + 1] == [start] else [start]) + ids[given:head]
            tokens = ids[head:stop]
            avg_logprob, no_speech_prob, logprobs = self._score(encoded[i], prefix, tokens)
            probs = [float(np.exp(x)) for x in logprobs]
            pieces, resume_at = split_by_timestamps(tokens, self.timestamp_begin, duration)
            if options.word_timestamps:
                times = out["token_timestamps"][i].tolist()[head:stop]
                k = 0
                for piece in pieces:
                    n = len(piece["tokens"])
                    piece["words"] = self._words(piece["tokens"], times[k:k + n], probs[k:k + n], piece["end"])
                    k += n
            language = "en" if self.english_only else self._language(prefix) or options.language or ""
            results.append(decoded_window(
                pieces, resume_at, lambda t: tokenizer.decode(t, skip_special_tokens=True), self.timestamp_begin,
                duration, language=language, avg_logprob=avg_logprob, no_speech_prob=no_speech_prob,
                text=tokenizer.decode([t for t in tokens if t < eot], skip_special_tokens=True),
                temperature=temperature, token_logprobs=logprobs if scores else None))
        return results

    def _language(self, prompt: list[int]) -> str | None:
        lang_ids = {v: k for k, v in (self.model.generation_config.lang_to_id or {}).items()}
        return next((lang_ids[t][2:-2] for t in prompt if t in lang_ids), None)

    def _score(self, encoded, prefix: list[int], tokens: list[int]) -> tuple[float, float, list[float]]:
        """Whisper's avg_logprob and no_speech_prob, and each token's log probability, by one teacher-forced pass.

        ``prefix``: everything before the first generated token (a prompt, then the start
        of transcript and the task tokens); no-speech is read right after the start of transcript.
        """
        import torch

        eot = self.model.generation_config.eos_token_id
        ids = torch.tensor([prefix + tokens], device=self.model.device)
        with torch.inference_mode():
            hidden = self.model.model.decoder(input_ids=ids, encoder_hidden_states=encoded[None]).last_hidden_state
            logprobs = torch.log_softmax(self.model.proj_out(hidden)[0].float(), dim=-1)
        targets = tokens + [eot]
        picked = logprobs[len(prefix) - 1:len(prefix) - 1 + len(targets)].gather(
            1, torch.tensor(targets, device=logprobs.device)[:, None])[:, 0]
        sot = prefix.index(self.model.generation_config.decoder_start_token_id)
        no_speech = float(logprobs[sot, self.no_speech_id].exp())
        return float(picked.sum()) / (len(tokens) + 1), no_speech, picked[:-1].tolist()

    def _words(self, tokens: list[int], times: list[float], probs: Optional[list[float]], end: float) -> list[dict]:
        """Words from token timestamps (each token's time is when it ends, as transformers aligns them).

        A token that starts with a space starts a word; any other (a word's next
        piece, or punctuation) joins the last one.
        """
        pieces = self.processor.tokenizer.convert_ids_to_tokens(tokens)
        words: list[dict] = []
        for j, (token, piece) in enumerate(zip(tokens, pieces)):
            if token >= self.model.generation_config.eos_token_id:
                continue  # timestamps and other special tokens
            text = self.processor.tokenizer.convert_tokens_to_string([piece])
            finish = min(float(times[j]), end) if j < len(times) else end
            if words and not text.startswith(" "):
                words[-1]["word"] += text
                words[-1]["end"] = max(words[-1]["end"], finish)
                words[-1]["_probs"].append(probs[j] if probs else None)
                continue
            begin = min(float(times[j - 1]), finish) if 0 < j <= len(times) else finish
            words.append({"word": text, "start": begin, "end": finish, "_probs": [probs[j] if probs else None]})
        for w in words:
            known = [x for x in w.pop("_probs") if x is not None]
            w["probability"] = float(np.mean(known)) if known else None
        return words


BACKEND = TransformersBackend
