"""Exact, offline conversion of a CTranslate2 Whisper directory to the two torch layouts.

The container embeds one model (tiny.en) in CTranslate2 form; the openai-whisper
and transformers backends need their own formats. Rather than download them,
we read CTranslate2's ``model.bin`` ourselves (a small documented binary
format) and write the same weights under the other libraries' names. Nothing
is re-trained or approximated: float16 weights widened to float32 give the
same numbers, so all three engines run one model.

Format (``ctranslate2/specs/model_spec.py``, binary version 6):
header ``uint32 version, string spec, uint32 revision, uint32 count``; then
per variable ``string name, uint8 rank, rank*uint32 dims, uint8 dtype,
uint32 nbytes, data``; then ``uint32 count`` aliases of ``string alias,
string target``. A string is a uint16 length (counting a trailing NUL) and the
bytes. Quantised models (int8 / int16) carry a ``<name>_scale`` variable next
to each quantised weight; we dequantise them (``value / scale`` per output row),
so an int8 model converts too, with its quantisation error baked in.

See /work/shared/notes/ct2-whisper-layout.md for the name mapping and pitfalls.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import ArtifactError

SUPPORTED_BINARY_VERSIONS = (5, 6)
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
"""CTranslate2's dtype codes, in the order of ``_dtype_to_type_id`` (code = index)."""

ALIGNMENT_HEADS_FILE = "alignment_heads.json"
"""Written beside a converted ``.pt``: whisper.load_model(path) does not set the heads, word timestamps need them."""

TORCH_DTYPES = ("float32", "float16")


# ---- reading model.bin ------------------------------------------------------

@dataclass(frozen=True)
class CT2Model:
    """The variables of a CTranslate2 model.bin, aliases resolved, quantisation undone."""

    spec: str
    revision: int
    variables: dict  # name -> np.ndarray (floating weights as float32; scalars as stored)
    source_dtype: str  # the dtype most weight bytes were stored in (float16, int8...)

    def num_heads(self, side: str) -> int:
        key = f"{side}/num_heads"
        if key not in self.variables:
            raise ArtifactError(f"model.bin has no {key} variable; is this a Whisper model?")
        return int(self.variables[key])

    def num_layers(self, side: str) -> int:
        pattern = re.compile(rf"^{side}/layer_(\d+)/")
        layers = {int(m.group(1)) for name in self.variables if (m := pattern.match(name))}
        return len(layers)


class _Cursor:
    """Sequential little-endian reads over the file's bytes, with errors that name the file."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ArtifactError(f"{self.path} is truncated (wanted {n} bytes at offset {self.pos} of {len(self.data)})")
        view = memoryview(self.data)[self.pos:self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        return bytes(self.take(length)).rstrip(b"\0").decode("utf-8")


def _to_array(raw: memoryview, dtype: str, shape: tuple) -> np.ndarray:
    if dtype == "bfloat16":
        # numpy has no bfloat16: it is the top half of a float32.
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_ct2_model(model_bin: Path) -> CT2Model:
    """Read every variable of a CTranslate2 ``model.bin`` (weights as float32)."""
    model_bin = Path(model_bin)
    try:
        data = model_bin.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {model_bin}: {exc}") from None
    cur = _Cursor(data, model_bin)
    (version,) = cur.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ArtifactError(f"{model_bin} has CTranslate2 binary version {version}; "
                            f"this reader knows {SUPPORTED_BINARY_VERSIONS}")
    spec = cur.string()
    (revision,) = cur.unpack("I")
    (count,) = cur.unpack("I")
    raw: dict[str, np.ndarray] = {}
    dtype_bytes: dict[str, int] = {}
    for _ in range(count):
        name = cur.string()
        (rank,) = cur.unpack("B")
        shape = cur.unpack(f"{rank}I") if rank else ()
        (code,) = cur.unpack("B")
        if code >= len(DTYPES):
            raise ArtifactError(f"{model_bin}: variable {name} has unknown dtype code {code}")
        dtype = DTYPES[code]
        (nbytes,) = cur.unpack("I")
        raw[name] = _to_array(cur.take(nbytes), dtype, tuple(shape))
        if rank >= 1 and not name.endswith("_scale"):
            dtype_bytes[dtype] = dtype_bytes.get(dtype, 0) + nbytes
    (alias_count,) = cur.unpack("I") if cur.pos < len(data) else (0,)
    for _ in range(alias_count):
        alias, target = cur.string(), cur.string()
        if target not in raw:
            raise ArtifactError(f"{model_bin}: alias {alias} points to missing variable {target}")
        raw[alias] = raw[target]
        if f"{target}_scale" in raw:  # a quantised alias shares its target's scale
            raw[f"{alias}_scale"] = raw[f"{target}_scale"]
    variables = _dequantise(raw)
    source = max(dtype_bytes, key=dtype_bytes.get) if dtype_bytes else "float32"
    return CT2Model(spec=spec, revision=revision, variables=variables, source_dtype=source)


def read_ct2_header(model_bin: Path) -> tuple[str, dict[str, tuple]]:
    """(spec name, {variable: shape}) without reading the weights: seeks over the data, so it is cheap for large-v3."""
    model_bin = Path(model_bin)
    with open(model_bin, "rb") as fh:
        def unpack(fmt: str):
            size = struct.calcsize("<" + fmt)
            data = fh.read(size)
            if len(data) < size:
                raise ArtifactError(f"{model_bin} is truncated")
            return struct.unpack("<" + fmt, data)

        def string() -> str:
            (length,) = unpack("H")
            return fh.read(length).rstrip(b"\0").decode("utf-8", "replace")

        (version,) = unpack("I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise ArtifactError(f"{model_bin} has CTranslate2 binary version {version}; "
                                f"this reader knows {SUPPORTED_BINARY_VERSIONS}")
        spec = string()
        unpack("I")
        (count,) = unpack("I")
        shapes = {}
        for _ in range(count):
            name = string()
            (rank,) = unpack("B")
            shapes[name] = unpack(f"{rank}I") if rank else ()
            unpack("B")
            (nbytes,) = unpack("I")
            fh.seek(nbytes, 1)
    return spec, shapes


def guess_model_name(n_audio_layer: int, n_text_layer: int, n_state: int, n_vocab: int) -> Optional[str]:
    """openai-whisper's name for these dimensions (tiny.en, large-v3, turbo...), None when unknown."""
    sizes = {(4, 384): "tiny", (6, 512): "base", (12, 768): "small", (24, 1024): "medium", (32, 1280): "large"}
    base = sizes.get((n_audio_layer, n_state))
    if base is None:
        return None
    if base == "large" and n_text_layer == 4:
        return "turbo"
    if n_vocab == 51864:
        return f"{base}.en" if base != "large" else None
    return "large-v3" if base == "large" and n_vocab == 51866 else base


def _dequantise(raw: dict) -> dict:
    """Float32 copies of every weight; int8/int16 weights divided by their ``_scale``.

    Aliases share one array in ``raw`` and keep sharing it here (no second copy
    of the tied 51864 x d embedding).
    """
    out, done = {}, {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        if id(value) in done:
            out[name] = done[id(value)]
            continue
        scale = raw.get(f"{name}_scale")
        if value.dtype in (np.int8, np.int16) and value.ndim >= 1 and scale is not None:
            scale = np.asarray(scale, dtype=np.float32)
            flat = value.reshape(value.shape[0], -1).astype(np.float32)
            # int8: one scale per output row; int16: one scalar for the whole matrix.
            flat /= scale.reshape(-1, 1) if scale.ndim else scale
            converted = flat.reshape(value.shape)
        elif value.dtype in (np.float16, np.float32) and value.ndim >= 1:
            converted = value.astype(np.float32)
        else:
            converted = value  # scalars (num_heads, flags) and int8-encoded strings
        out[name] = done[id(value)] = converted
    return out


# ---- CTranslate2 -> openai-whisper names ------------------------------------

@dataclass(frozen=True)
class Dims:
    """openai-whisper's ModelDimensions, derived from tensor shapes and num_heads."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def is_multilingual(self) -> bool:
        # openai-whisper's own rule: the English-only models have 51864 tokens.
        return self.n_vocab >= 51865


def dims_of(model: CT2Model) -> Dims:
    v = model.variables
    try:
        conv1 = v["encoder/conv1/weight"]
        return Dims(
            n_mels=conv1.shape[1],
            n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
            n_audio_state=conv1.shape[0],
            n_audio_head=model.num_heads("encoder"),
            n_audio_layer=model.num_layers("encoder"),
            n_vocab=v["decoder/embeddings/weight"].shape[0],
            n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
            n_text_state=v["decoder/embeddings/weight"].shape[1],
            n_text_head=model.num_heads("decoder"),
            n_text_layer=model.num_layers("decoder"),
        )
    except KeyError as exc:
        raise ArtifactError(f"model.bin ({model.spec}) lacks {exc.args[0]}: not a Whisper model") from None


def _split_rows(w: np.ndarray, parts: int) -> list[np.ndarray]:
    """CTranslate2 fuses projections by plain row concatenation ([q; k; v])."""
    return np.split(w, parts, axis=0)


def openai_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """The openai-whisper ``model_state_dict`` (numpy float32) of a CTranslate2 Whisper model."""
    if model.spec != "WhisperSpec":
        raise ArtifactError(f"model.bin holds a {model.spec}, not a WhisperSpec")
    v = model.variables
    dims = dims_of(model)
    sd: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        used.add(name)
        return v[name]

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = get(f"{src}/gamma")
        sd[f"{dst}.bias"] = get(f"{src}/beta")

    def fused(dsts: Iterable[str], src: str) -> None:
        dsts = list(dsts)
        weights = _split_rows(get(f"{src}/weight"), len(dsts))
        biases = _split_rows(get(f"{src}/bias"), len(dsts))
        for dst, w, b in zip(dsts, weights, biases):
            sd[f"{dst}.weight"] = w
            if not dst.endswith(".key"):  # Whisper's keys have no bias; CT2 stores zeros
                sd[f"{dst}.bias"] = b

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    for i in range(dims.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        fused([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        ffn(dst, src)
    norm("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    for i in range(dims.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        fused([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        fused([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        ffn(dst, src)
    norm("decoder.ln", "decoder/layer_norm")

    projection = v.get("decoder/projection/weight")
    if projection is not None and not np.array_equal(projection, sd["decoder.token_embedding.weight"]):
        raise ArtifactError("model.bin: decoder/projection/weight differs from the token embedding; "
                            "Whisper ties them, so this is not a Whisper model")
    used.add("decoder/projection/weight")
    leftover = [n for n, a in v.items() if n not in used and getattr(a, "ndim", 0) >= 2]
    if leftover:
        raise ArtifactError(f"model.bin has weights this converter does not map: {', '.join(sorted(leftover)[:5])}")
    return sd


# ---- CTranslate2 directory: config and tokenizer facts ----------------------

@dataclass(frozen=True)
class SpecialTokens:
    """Token ids Whisper's decoding needs, read from the tokenizer (they shift for English-only models)."""

    eot: int
    sot: int
    transcribe: int
    translate: int
    sot_prev: int
    sot_lm: int
    no_timestamps: int
    languages: dict  # "<|en|>" -> id, empty for English-only

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1


def read_tokenizer_json(ct2_dir: Path) -> dict:
    path = Path(ct2_dir) / "tokenizer.json"
    if not path.is_file():
        raise ArtifactError(f"{ct2_dir} has no tokenizer.json; it is needed to convert (and by faster-whisper offline)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None


def special_tokens(tokenizer_json: dict, multilingual: bool) -> SpecialTokens:
    ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    ids.update({k: v for k, v in tokenizer_json.get("model", {}).get("vocab", {}).items() if k.startswith("<|")})

    def need(token: str) -> int:
        if token not in ids:
            raise ArtifactError(f"tokenizer.json lacks the Whisper token {token}")
        return ids[token]

    sot, translate = need("<|startoftranscript|>"), need("<|translate|>")
    languages = {}
    if multilingual:
        languages = {tok: i for tok, i in ids.items() if sot < i < translate and re.fullmatch(r"<\|[a-z]{2,3}\|>", tok)}
    return SpecialTokens(eot=need("<|endoftext|>"), sot=sot, transcribe=need("<|transcribe|>"), translate=translate,
                         sot_prev=need("<|startofprev|>"), sot_lm=need("<|startoflm|>"),
                         no_timestamps=need("<|notimestamps|>"), languages=languages)


def read_ct2_config(ct2_dir: Path) -> dict:
    path = Path(ct2_dir) / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None


def alignment_heads(ct2_config: dict, dims: Dims) -> Optional[list[list[int]]]:
    """The [layer, head] pairs of the CT2 config, checked against the model's shape."""
    heads = ct2_config.get("alignment_heads")
    if not heads:
        return None
    pairs = [[int(layer), int(head)] for layer, head in heads]
    for layer, head in pairs:
        if not (0 <= layer < dims.n_text_layer and 0 <= head < dims.n_text_head):
            raise ArtifactError(f"config.json alignment head [{layer}, {head}] is outside the "
                                f"{dims.n_text_layer}x{dims.n_text_head} decoder")
    return pairs


def _load_ct2_dir(ct2_dir: Path) -> tuple[CT2Model, Dims, dict]:
    ct2_dir = Path(ct2_dir)
    model_bin = ct2_dir / "model.bin"
    if not model_bin.is_file():
        raise ArtifactError(f"{ct2_dir} has no model.bin (not a CTranslate2 model directory)")
    model = read_ct2_model(model_bin)
    return model, dims_of(model), read_ct2_config(ct2_dir)


def _check_dtype(dtype: str) -> None:
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {TORCH_DTYPES}, got {dtype!r}")


# ---- openai-whisper ---------------------------------------------------------

def ct2_to_openai(ct2_dir: Path, out_path: Path, dtype: str = "float32") -> Path:
    """Write ``out_path`` (.pt) as openai-whisper's own checkpoints are, plus alignment_heads.json beside it.

    Loadable with ``whisper.load_model(out_path)``; then call
    :func:`apply_openai_alignment_heads` so word timestamps work.
    """
    import torch

    _check_dtype(dtype)
    model, dims, config = _load_ct2_dir(ct2_dir)
    state = {k: torch.from_numpy(np.ascontiguousarray(a)).to(getattr(torch, dtype))
             for k, a in openai_state_dict(model).items()}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": state}, out_path)
    heads = alignment_heads(config, dims)
    if heads is not None:
        (out_path.parent / ALIGNMENT_HEADS_FILE).write_text(json.dumps(heads) + "\n")
    return out_path


def load_openai_alignment_heads(pt_path: Path) -> Optional[list[list[int]]]:
    """The heads for a .pt: ``alignment_heads.json`` beside it, else openai-whisper's table by file name."""
    pt_path = Path(pt_path)
    beside = pt_path.parent / ALIGNMENT_HEADS_FILE
    if beside.is_file():
        try:
            return [[int(layer), int(head)] for layer, head in json.loads(beside.read_text())]
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{beside} must be a JSON list of [layer, head] pairs: {exc}") from None
    import whisper

    dump = whisper._ALIGNMENT_HEADS.get(pt_path.stem)
    if dump is None:
        return None
    return decode_alignment_heads(dump)


def encode_alignment_heads(heads: list[list[int]], n_layer: int, n_head: int) -> bytes:
    """[layer, head] pairs -> the base85 gzip'd mask that ``Whisper.set_alignment_heads`` takes."""
    mask = np.zeros((n_layer, n_head), dtype=bool)
    for layer, head in heads:
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes()))


def decode_alignment_heads(dump: bytes, n_head: Optional[int] = None) -> list[list[int]]:
    """Inverse of :func:`encode_alignment_heads` (n_head is implied by openai's table otherwise)."""
    flat = np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool)
    if n_head is None:
        n_head = _heads_for_mask_size(flat.size)
    return [[int(i) // n_head, int(i) % n_head] for i in np.flatnonzero(flat)]


def _heads_for_mask_size(size: int) -> int:
    # openai-whisper's shapes: (layers, heads) = tiny 4x6, base 6x8, small 12x12, medium 24x16, large 32x20, turbo 4x20
    for layers, heads in ((4, 6), (6, 8), (12, 12), (24, 16), (32, 20), (4, 20)):
        if layers * heads == size:
            return heads
    raise ArtifactError(f"cannot infer the head count of an alignment mask of {size} entries")


def apply_openai_alignment_heads(model, pt_path: Path) -> bool:
    """Set the alignment heads of a model loaded from ``pt_path``; False when none are known."""
    heads = load_openai_alignment_heads(pt_path)
    if heads is None:
        return False
    dims = model.dims
    model.set_alignment_heads(encode_alignment_heads(heads, dims.n_text_layer, dims.n_text_head))
    return True


# ---- transformers -----------------------------------------------------------

def hf_name(openai_name: str) -> str:
    """openai-whisper parameter name -> WhisperForConditionalGeneration's."""
    rules = (
        (r"^encoder\.positional_embedding$", "model.encoder.embed_positions.weight"),
        (r"^decoder\.positional_embedding$", "model.decoder.embed_positions.weight"),
        (r"^decoder\.token_embedding\.", "model.decoder.embed_tokens."),
        (r"^encoder\.ln_post\.", "model.encoder.layer_norm."),
        (r"^decoder\.ln\.", "model.decoder.layer_norm."),
        (r"^(encoder|decoder)\.blocks\.", r"model.\1.layers."),
        (r"^encoder\.conv", "model.encoder.conv"),
        (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
        (r"\.attn_ln\.", ".self_attn_layer_norm."),
        (r"\.cross_attn\.", ".encoder_attn."),
        (r"\.attn\.", ".self_attn."),
        (r"\.query\.", ".q_proj."), (r"\.key\.", ".k_proj."), (r"\.value\.", ".v_proj."), (r"\.out\.", ".out_proj."),
        (r"\.mlp\.0\.", ".fc1."), (r"\.mlp\.2\.", ".fc2."), (r"\.mlp_ln\.", ".final_layer_norm."),
    )
    name = openai_name
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def _hf_config(dims: Dims, tokens: SpecialTokens):
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=dims.n_vocab, num_mel_bins=dims.n_mels, d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer, encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer, decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=4 * dims.n_audio_state, decoder_ffn_dim=4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx, max_target_positions=dims.n_text_ctx,
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        # openai/whisper-*: English-only models end with and start from <|endoftext|>, multilingual ones from sot.
        bos_token_id=tokens.sot if not dims.is_multilingual else tokens.eot,
        eos_token_id=tokens.eot, pad_token_id=tokens.eot, decoder_start_token_id=tokens.sot,
        # generation settings live in generation_config.json only: transformers 5 warns when both carry them
        suppress_tokens=None, begin_suppress_tokens=None,
    )


def _hf_generation_config(config, dims: Dims, tokens: SpecialTokens, ct2_config: dict):
    from transformers import GenerationConfig

    heads = alignment_heads(ct2_config, dims)
    gen = GenerationConfig(
        decoder_start_token_id=tokens.sot, bos_token_id=config.bos_token_id,
        eos_token_id=tokens.eot, pad_token_id=tokens.eot,
        max_length=dims.n_text_ctx,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, tokens.eot]),
        suppress_tokens=list(ct2_config.get("suppress_ids") or []), no_timestamps_token_id=tokens.no_timestamps,
        prev_sot_token_id=tokens.sot_prev, max_initial_timestamp_index=50,
        is_multilingual=dims.is_multilingual, return_timestamps=False,
    )
    if heads is not None:
        gen.alignment_heads = heads
    if dims.is_multilingual:
        # English-only models must not have these: the pipeline would force a language token.
        gen.lang_to_id = dict(tokens.languages)
        gen.task_to_id = {"transcribe": tokens.transcribe, "translate": tokens.translate}
    return gen


def _hf_tokenizer(ct2_dir: Path, tokenizer_json: dict):
    from transformers import WhisperTokenizer

    special = [t["content"] for t in tokenizer_json.get("added_tokens", []) if t["content"] != "<|endoftext|>"]
    # transformers 5: undeclared added tokens are not special and timestamps would decode as text.
    return WhisperTokenizer(tokenizer_file=str(Path(ct2_dir) / "tokenizer.json"), extra_special_tokens=special,
                            unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>", model_max_length=1024)


def ct2_to_transformers(ct2_dir: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Write a ``save_pretrained`` directory: model, config, generation config, processor.

    Loadable offline by ``pipeline("automatic-speech-recognition", model=out_dir)``.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    _check_dtype(dtype)
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    model, dims, ct2_config = _load_ct2_dir(ct2_dir)
    tokenizer_json = read_tokenizer_json(ct2_dir)
    tokens = special_tokens(tokenizer_json, dims.is_multilingual)
    config = _hf_config(dims, tokens)
    torch_dtype = getattr(torch, dtype)
    state = {hf_name(k): torch.from_numpy(np.ascontiguousarray(a)).to(torch_dtype)
             for k, a in openai_state_dict(model).items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]

    with torch.device("meta"):
        hf_model = WhisperForConditionalGeneration(config)
    missing, unexpected = hf_model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ArtifactError(f"weight names do not match transformers' Whisper: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")
    hf_model.tie_weights()
    hf_model.generation_config = _hf_generation_config(config, dims, tokens, ct2_config)
    hf_model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(out_dir)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=dims.n_mels),
        tokenizer=_hf_tokenizer(ct2_dir, tokenizer_json),
    )
    processor.save_pretrained(out_dir)
    # transformers 5 writes processor_config.json; older releases look for preprocessor_config.json.
    processor.feature_extractor.to_json_file(out_dir / "preprocessor_config.json")
    for path in out_dir.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; other users (the serving one) must read it
    return out_dir
