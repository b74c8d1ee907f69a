"""CTranslate2: our Transformer as a CTranslate2 model, and decoding with it (`--engine ct2`).

Conversion fills CTranslate2's TransformerSpec from the model's own modules: pre- or post-norm,
ReLU or erf GELU, the fused q/k/v and k/v projections in our row order, embeddings scaled by
sqrt(d_model), and the position table written out explicitly, because CTranslate2's built-in
sinusoids differ from ours (it concatenates sin | cos and counts from 1; we interleave them and
count from 0); learned positions are written the same way. The vocabulary is the sentencepiece
pieces in id order, so a piece's id is the same in both; pad 0, unk 1, bos 2 (the decoder's start)
and eos 3 (appended to every source, as our batches do). The output layer gets a bias of -1e9
on <pad> and <s>: our decoder never emits them (mt.model.never_emit), and CTranslate2 then never does.

Decoding maps DecodeConfig as closely as CTranslate2 allows (docs/benchmarks.md lists what differs):

* beam search: both keep 2K candidates, end a hypothesis on an eos among the K best and stop a
  sentence once K hypotheses ended; CTranslate2 is asked for all K with their scores and we rank
  them with our GNMT length penalty ((5 + len) / 6) ** alpha (its own is len ** alpha);
* the per-sentence length limit a * source length + b (ours, capped by the positions) becomes
  one CTranslate2 call per distinct limit; at the limit ours forces eos, CTranslate2 stops;
* no attention comes back: alignments and heatmaps need our engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mt.config import DecodeConfig
from mt.errors import UserError
from mt.fileio import atomic_write_json
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

if TYPE_CHECKING:
    from torch import Tensor, nn

    from mt.decode import Hypothesis
    from mt.model import Transformer

QUANTIZATIONS = ("float32", "int8", "int8_float32")
INFO = "mt.json"  # beside CTranslate2's own files: what our engine needs to know of the model
INFO_FORMAT = "mt-ct2"
NEVER = -1e9  # output bias of the ids our decoder never emits


def import_ctranslate2():
    """The ctranslate2 module, or one line saying how to install it."""
    try:
        import ctranslate2
    except ImportError:
        raise UserError("CTranslate2 is not installed: pip install ctranslate2 (or reinstall mt)") from None
    return ctranslate2


def _first_line(err: BaseException) -> str:
    return (str(err).strip() or type(err).__name__).splitlines()[0][:200]


# Conversion -----------------------------------------------------------------------------------
def _np(tensor: Tensor) -> np.ndarray:
    """A float32 copy: CTranslate2 quantizes its arrays in place, which must not reach our model."""
    return tensor.detach().cpu().float().numpy().copy()


def _linear(spec, module: nn.Linear) -> None:
    spec.weight = _np(module.weight)
    if module.bias is not None:
        spec.bias = _np(module.bias)


def _norm(spec, module: nn.Module) -> None:
    spec.gamma = _np(module.weight)
    spec.beta = _np(module.bias)


def _positions(spec, embedding) -> None:
    """The table our Embedding adds, row i at position i (the decoder's <s> is position 0)."""
    spec.position_encodings.encodings = _np(
        embedding.learned.weight if embedding.learned is not None else embedding.table
    )


def _encoder(spec, model: Transformer) -> None:
    spec.embeddings[0].weight = _np(model.src_embed.tokens.weight)
    _positions(spec, model.src_embed)
    for layer_spec, layer in zip(spec.layer, model.encoder):
        _linear(layer_spec.self_attention.linear[0], layer.attn.qkv)  # rows: q, k, v (as CTranslate2 fuses them)
        _linear(layer_spec.self_attention.linear[1], layer.attn.out)
        _norm(layer_spec.self_attention.layer_norm, layer.sub_attn.norm)
        _ffn(layer_spec.ffn, layer.ffn, layer.sub_ffn.norm)
    if model.config.norm == "pre":
        _norm(spec.layer_norm, model.enc_norm)


def _decoder(spec, model: Transformer) -> None:
    spec.embeddings.weight = _np(model.tgt_embed.tokens.weight)
    _positions(spec, model.tgt_embed)
    for layer_spec, layer in zip(spec.layer, model.decoder):
        _linear(layer_spec.self_attention.linear[0], layer.self_attn.qkv)
        _linear(layer_spec.self_attention.linear[1], layer.self_attn.out)
        _norm(layer_spec.self_attention.layer_norm, layer.sub_self.norm)
        _linear(layer_spec.attention.linear[0], layer.cross_attn.q)
        _linear(layer_spec.attention.linear[1], layer.cross_attn.kv)  # rows: k, v
        _linear(layer_spec.attention.linear[2], layer.cross_attn.out)
        _norm(layer_spec.attention.layer_norm, layer.sub_cross.norm)
        _ffn(layer_spec.ffn, layer.ffn, layer.sub_ffn.norm)
    if model.config.norm == "pre":
        _norm(spec.layer_norm, model.dec_norm)
    spec.projection.weight = _np(model.output.weight)
    bias = np.zeros(model.tgt_vocab_size, dtype=np.float32)
    bias[[PAD_ID, BOS_ID]] = NEVER
    if model.shortlist is not None:  # model.output_shortlist: the pieces outside it are never emitted
        bias[~model.emittable.cpu().numpy()] = NEVER
    spec.projection.bias = bias


def _ffn(spec, ffn, norm) -> None:
    _norm(spec.layer_norm, norm)
    _linear(spec.linear_0, ffn.up)
    _linear(spec.linear_1, ffn.down)


def pieces(processor) -> list[str]:
    """A sentencepiece model's pieces in id order: CTranslate2's vocabulary, id for id."""
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def model_spec(model: Transformer, tokenizer: Tokenizer):
    """The TransformerSpec of our model, filled and validated."""
    ctranslate2 = import_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    c = model.config
    activation = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}[c.activation]
    pre = c.norm == "pre"
    encoder = transformer_spec.TransformerEncoderSpec(len(model.encoder), c.heads, pre_norm=pre, activation=activation)
    decoder = transformer_spec.TransformerDecoderSpec(len(model.decoder), c.heads, pre_norm=pre, activation=activation)
    spec = transformer_spec.TransformerSpec(encoder, decoder)
    _encoder(spec.encoder, model)
    _decoder(spec.decoder, model)
    src, tgt = pieces(tokenizer.src), pieces(tokenizer.tgt)
    if len(set(src[:4])) < 4 or src[:4] != tgt[:4]:
        raise UserError(f"the sentencepiece models' first pieces {src[:4]} / {tgt[:4]} are not pad, unk, bos, eos")
    spec.register_source_vocabulary(src)
    spec.register_target_vocabulary(tgt)
    config = spec.config
    config.unk_token, config.bos_token, config.eos_token = src[UNK_ID], src[BOS_ID], src[EOS_ID]
    config.decoder_start_token = src[BOS_ID]
    config.add_source_bos, config.add_source_eos = False, True
    config.layer_norm_epsilon = model.encoder[0].sub_attn.norm.eps  # every LayerNorm of ours has torch's default
    try:
        spec.validate()
    except ValueError as err:
        raise UserError(f"CTranslate2 {ctranslate2.__version__} rejects the converted model: {err}") from None
    return spec


def write_ct2(model: Transformer, tokenizer: Tokenizer, directory: Path, quantization: str, info: dict) -> None:
    """A CTranslate2 model in `directory` (new, or empty): model.bin, config.json, vocabulary,
    the sentencepiece model(s) and mt.json (`info` + languages and limits for our engine)."""
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    spec = model_spec(model, tokenizer)
    spec.optimize(quantization=quantization)  # ties become aliases (stored once), then weights are quantized
    directory.mkdir(parents=True, exist_ok=True)
    spec.save(str(directory))
    tokenizer.save(directory)
    record = {"format": INFO_FORMAT, "quantization": quantization, "max_positions": model.config.max_positions}
    atomic_write_json(directory / INFO, {**record, **info})


# Decoding -------------------------------------------------------------------------------------
def ct2_dir(path: Path) -> Path:
    """The CTranslate2 model a --model path names: the folder itself, or an export's ct2/."""
    if not path.exists():
        raise UserError(f"model not found: {path}")
    for candidate in (path, path / "ct2"):
        if (candidate / "model.bin").is_file() and (candidate / INFO).is_file():
            return candidate
    if path.is_dir() and (path / "model.bin").is_file():
        raise UserError(f"{path} is a CTranslate2 model but not one mt exported (no {INFO}): export it with mt.export")
    raise UserError(
        f"{path} is not a CTranslate2 model folder (model.bin + {INFO}, or an export with ct2/): "
        "make one with python -m mt.export ct2"
    )


def ct2_device(device: str) -> tuple[str, int]:
    """--device (auto | cpu | cuda | cuda:N) as CTranslate2's device and index."""
    ctranslate2 = import_ctranslate2()
    cuda = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return ("cuda", 0) if cuda else ("cpu", 0)
    if device == "cpu":
        return "cpu", 0
    name, _, index = device.partition(":")
    if name != "cuda" or not (index.isdigit() or not index):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if int(index or 0) >= cuda:
        raise UserError(f"--device {device}: CTranslate2 sees {cuda} CUDA device(s)")
    return "cuda", int(index or 0)


@dataclass
class CT2Model:
    """A loaded CTranslate2 export and what decoding with it needs."""

    translator: Any  # ctranslate2.Translator
    tokenizer: Tokenizer
    info: dict[str, Any]  # mt.json
    path: Path

    @property
    def src_lang(self) -> str:
        return self.info["src_lang"]

    @property
    def tgt_lang(self) -> str:
        return self.info["tgt_lang"]

    @property
    def max_positions(self) -> int:
        return int(self.info["max_positions"])


def load_ct2(path: Path | str, device: str = "cpu", threads: int = 1, compute_type: str = "default") -> CT2Model:
    """Open an export (its ct2/ folder, or that folder itself); threads 0 = one per core."""
    ctranslate2 = import_ctranslate2()
    directory = ct2_dir(Path(path))
    name, index = ct2_device(device)
    try:
        info = json.loads((directory / INFO).read_text(encoding="utf-8"))
        if not isinstance(info, dict) or info.get("format") != INFO_FORMAT:
            raise ValueError(f"{INFO} has no '{INFO_FORMAT}' marker")
        missing = [key for key in ("src_lang", "tgt_lang", "max_positions") if key not in info]
        if missing:
            raise ValueError(f"{INFO} lacks {', '.join(missing)}")
        tokenizer = Tokenizer.load(directory)
        if tokenizer is None:
            raise ValueError("no sentencepiece model (spm.joint.model or spm.src/tgt.model)")
        translator = ctranslate2.Translator(
            str(directory),
            device=name,
            device_index=index,
            compute_type=compute_type,
            inter_threads=1,
            intra_threads=threads or os.cpu_count() or 1,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot load the CTranslate2 model {directory}: {_first_line(err)}") from None
    return CT2Model(translator, tokenizer, info, directory)


def output_limits(src_ids: Sequence[Sequence[int]], cfg: DecodeConfig, max_positions: int) -> list[int]:
    """Our decoder's output limit per sentence (tokens including eos), by its own code."""
    from mt.batching import source_tensor
    from mt.decode import max_output_lengths

    return max_output_lengths(source_tensor([list(ids) for ids in src_ids]), cfg, max_positions).tolist()


def _search_options(cfg: DecodeConfig, limit: int) -> dict[str, Any]:
    """translate_batch options for one output limit. CTranslate2 stops at its limit where ours
    forces eos at ours, so its limit is one less; a length penalty of 1 keeps its beam search
    running until K hypotheses ended (0 would stop at the first) and lets us undo its
    normalization (score * length) to apply ours."""
    return {
        "beam_size": cfg.beam_size,
        "num_hypotheses": cfg.beam_size,
        "length_penalty": 1.0,
        "return_scores": True,
        "return_end_token": True,
        "max_input_length": 0,  # sources are cut to the model's positions before
        "max_decoding_length": max(1, limit - 1),
        "min_decoding_length": 0,  # ours may end at once
        "max_batch_size": max(1, cfg.max_tokens // max(1, cfg.beam_size // 2)),
        "batch_type": "tokens",
    }


def _hypotheses(model: CT2Model, result, cfg: DecodeConfig) -> list[Hypothesis]:
    """One sentence's CTranslate2 hypotheses as ours, ranked by our length penalty."""
    from mt.decode import Hypothesis, length_penalty

    eos = model.tokenizer.tgt.id_to_piece(EOS_ID)
    hyps = []
    for tokens, score in zip(result.hypotheses, result.scores):
        raw = score * max(len(tokens), 1)  # CTranslate2 divided the log-probability by the length
        ended = bool(tokens) and tokens[-1] == eos
        ids = [model.tokenizer.tgt.piece_to_id(t) for t in (tokens[:-1] if ended else tokens)]
        n = len(ids) + 1  # ours counts the eos, also the one it forces at the limit
        hyps.append(Hypothesis(ids, raw / length_penalty(n, cfg.length_penalty), raw))
    hyps.sort(key=lambda h: h.score, reverse=True)
    return hyps[: cfg.n_best]


def translate_ids(
    model: CT2Model,
    src_ids: Sequence[Sequence[int]],
    cfg: DecodeConfig,
    on_batch: Callable[[int], object] | None = None,
) -> list[list[Hypothesis]]:
    """mt.decode.translate_ids through CTranslate2: n-best Hypothesis lists in input order (no attention).

    An empty source gets one empty translation: CTranslate2 answers it so without decoding (ours
    decodes the lone eos)."""
    from mt.decode import Hypothesis

    if not src_ids:
        return []
    limit = model.max_positions - 1  # room for the source eos
    sources = [model.tokenizer.src_pieces(ids[:limit]) for ids in src_ids]
    by_limit: dict[int, list[int]] = {}
    for i, out_limit in enumerate(output_limits([ids[:limit] for ids in src_ids], cfg, model.max_positions)):
        by_limit.setdefault(out_limit, []).append(i)
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in sources]
    for out_limit, group in sorted(by_limit.items()):
        todo = [i for i in group if sources[i]]
        try:
            answers = model.translator.translate_batch([sources[i] for i in todo], **_search_options(cfg, out_limit))
        except (RuntimeError, ValueError) as err:
            raise UserError(f"CTranslate2 failed: {_first_line(err)}") from None
        for i, answer in zip(todo, answers):
            results[i] = _hypotheses(model, answer, cfg)
        if on_batch is not None:
            on_batch(len(group))
    return results
