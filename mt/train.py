"""Training loop: `python -m mt.train [overrides]` (Hydra), `make train`.

Resumable exactly: the checkpoint holds model, optimizer, step, epoch, position in the
epoch's batch order (which depends only on seed and epoch) and the RNG state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mt import checkpoint as ckpt_io
from mt import distributed
from mt.average import average_checkpoints, snapshot_name, snapshots
from mt.config import DecodeConfig, MTConfig
from mt.data import PreparedData, Split, bucket_batches, collate, padding_waste, prepare
from mt.decode import translate_ids
from mt.device import keep_freed_memory, pick_device
from mt.errors import UserError
from mt.evaluate import score_translations
from mt.fileio import atomic_torch_save, atomic_write_json
from mt.loss import smoothed_cross_entropy
from mt.model import Transformer
from mt.tokenizer import PAD_ID

log = logging.getLogger("mt.train")


@dataclass
class TrainState:
    step: int = 0  # optimizer updates done
    epoch: int = 0
    batch_in_epoch: int = 0  # next batch of this epoch's order
    best_bleu: float = -1.0
    best_step: int = 0
    bad_validations: int = 0
    nonfinite_steps: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def learning_rate(step: int, lr: float, warmup: int, min_lr: float = 0.0) -> float:
    """Linear warmup to `lr`, then inverse square root decay (Noam), floored at min_lr."""
    step = max(step, 1)
    if warmup <= 0:
        return lr
    return max(min_lr, lr * min(step / warmup, math.sqrt(warmup / step)))


def batch_loss(model: Transformer, batch, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed label-smoothed loss and summed NLL over the batch's real target tokens."""
    real = batch.tgt_out != PAD_ID
    logits, _ = model(batch.src, batch.tgt_in, select=real)  # through forward(): DDP and compile see it
    target = batch.tgt_out[real]
    loss, nll = smoothed_cross_entropy(logits, target, label_smoothing)
    return loss, nll, int(target.numel())


@torch.no_grad()
def validation_loss(model: Transformer, split: Split, max_tokens: int, device: torch.device) -> float:
    model.eval()
    total, tokens = 0.0, 0
    src_lens, tgt_lens = split.lengths()
    for idx in bucket_batches(src_lens, tgt_lens, max_tokens):
        batch = collate(split, idx).to(device)
        _, nll, n = batch_loss(model, batch, 0.0)
        total += float(nll)
        tokens += n
    return total / max(tokens, 1)


class Trainer:
    def __init__(self, cfg: MTConfig, run_dir: Path, overrides: list[str] | None = None):
        self.cfg, self.run_dir, self.overrides = cfg, run_dir, overrides or []
        self.tc = cfg.train
        self.device = pick_device(self.tc.device, "train.device")
        self.dist = distributed.init_from_env(self.device.type == "cuda")
        if self.device.type == "cpu":
            keep_freed_memory()
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device(self.dist.device)
        if self.tc.threads > 0:
            torch.set_num_threads(self.tc.threads)
        self.ckpt_dir = run_dir / "checkpoints"
        self.last_path = self.ckpt_dir / "last.pt"
        self.best_path = self.ckpt_dir / "best.pt"
        self.averaged_path = self.ckpt_dir / "averaged.pt"
        self.stop_signal: int | None = None
        self.state = TrainState()
        self.ddp_divergence: float | None = None  # max |param - rank 0's| after training (DDP check)

    # Setup ---------------------------------------------------------------------------------
    def _check_settings(self) -> None:
        tc, dc = self.tc, self.cfg.decode
        problems = []
        if tc.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"train.precision must be auto, fp32, bf16 or fp16, not '{tc.precision}'")
        for key in ("log_every", "accumulate", "max_tokens", "max_bad_steps"):
            if getattr(tc, key) < 1:
                problems.append(f"train.{key} must be at least 1, got {getattr(tc, key)}")
        if tc.average_last < 0:
            problems.append(f"train.average_last must be >= 0, got {tc.average_last}")
        if len(tc.betas) != 2:
            problems.append(f"train.betas needs two values, got {list(tc.betas)}")
        if dc.beam_size < 1 or not 1 <= dc.n_best <= dc.beam_size:
            problems.append(f"decode.beam_size must be >= 1 and 1 <= decode.n_best <= beam_size "
                            f"(got {dc.beam_size}, {dc.n_best})")
        if problems:
            raise UserError("; ".join(problems))

    def setup(self) -> None:
        cfg = self.cfg
        self._check_settings()
        torch.manual_seed(self.tc.seed)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / f".write-test-{os.getpid()}"  # per process: DDP ranks share the dir
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write to the run directory {self.run_dir}: {err.strerror}") from None
        resume_ckpt = None
        if self.tc.resume and self.last_path.exists():
            resume_ckpt = ckpt_io.read(self.last_path)
        elif self.tc.resume:
            log.warning("train.resume=true but %s does not exist: starting from scratch", self.last_path)
        tokenizer = ckpt_io.tokenizer_of(resume_ckpt) if resume_ckpt else None
        if not self.dist.main:  # rank 0 trains (or finds) the cached tokenizer first
            distributed.barrier(self.dist)
        self.data: PreparedData = prepare(cfg.data, tokenizer)
        if self.dist.main:
            self.data.tokenizer.save(self.run_dir / "tokenizer")
            distributed.barrier(self.dist)
        for name, rep in self.data.reports.items():
            if rep.empty or rep.too_long:
                log.info("%s: kept %d pairs, dropped %d empty and %d longer than %d tokens",
                         name, rep.kept, rep.empty, rep.too_long, cfg.data.max_len)
        if cfg.data.max_len > cfg.model.max_positions:
            raise UserError(f"data.max_len={cfg.data.max_len} exceeds model.max_positions={cfg.model.max_positions}")
        tok = self.data.tokenizer
        try:
            self.model = Transformer(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size, joint_vocab=tok.joint)
            self.model.to(self.device)
        except (ValueError, KeyError) as err:
            raise UserError(str(err)) from None
        optim_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(self.tc.optimizer)
        if optim_cls is None:
            raise UserError(f"train.optimizer must be adam or adamw, not '{self.tc.optimizer}'")
        self.optimizer = optim_cls(
            self.model.parameters(), lr=self.tc.lr, betas=tuple(self.tc.betas), weight_decay=self.tc.weight_decay
        )
        self.amp_dtype = autocast_dtype(self.tc.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step_model: torch.nn.Module = self.model
        if self.dist.enabled:
            # Replicas start from rank 0's weights; dropout differs per rank from here on.
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            torch.manual_seed(self.tc.seed + self.dist.rank)
        if self.tc.compile:
            self.step_model = torch.compile(self.step_model)
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.state.step or None) \
            if self.dist.main else None
        self.src_lens, self.tgt_lens = self.data.splits["train"].lengths()
        n_params = self.model.num_parameters()
        log.info("model: %s parameters, device %s, precision %s", f"{n_params:,}", self.device,
                 self.amp_dtype or "fp32")
        self._write_metrics("running")

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt["model_config"] != asdict(self.cfg.model):
            raise UserError(
                f"{self.last_path} was trained with a different model config; resume with the same "
                "model.* settings or start a new run directory"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["train_state"])
        rng_cpu, rng_cuda = ckpt["rng_cpu"], ckpt.get("rng_cuda")
        if len(rng_cpu) == self.dist.world:  # one RNG state per rank
            torch.set_rng_state(rng_cpu[self.dist.rank])
            if self.device.type == "cuda" and rng_cuda is not None:
                torch.cuda.set_rng_state(rng_cuda[self.dist.rank])
        else:
            log.warning("checkpoint has RNG states for %d processes, this run has %d: dropout RNG reseeded",
                        len(rng_cpu), self.dist.world)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", self.last_path, self.state.step,
                 self.state.epoch, self.state.batch_in_epoch)

    # Checkpoints ---------------------------------------------------------------------------
    def _pack(self, resumable: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {"train_state": asdict(self.state), "data_name": self.cfg.data.name}
        if resumable:
            extra["optimizer"] = self.optimizer.state_dict()
            if self.scaler is not None:
                extra["scaler"] = self.scaler.state_dict()
            extra["rng_cpu"] = distributed.gather(torch.get_rng_state(), self.dist)
            if self.device.type == "cuda":
                extra["rng_cuda"] = distributed.gather(torch.cuda.get_rng_state(), self.dist)
        return ckpt_io.pack(self.model, self.data.tokenizer, self.cfg.data.src_lang, self.cfg.data.tgt_lang, extra)

    def save_last(self) -> None:
        """Every rank must call this (RNG states are gathered); rank 0 writes."""
        ckpt = self._pack(resumable=True)
        if self.dist.main:
            atomic_torch_save(self.last_path, ckpt)
            if self.tc.average_last:
                self._snapshot(ckpt)

    def _snapshot(self, ckpt: dict[str, Any]) -> None:
        """Keep this step's weights for averaging; drop snapshots beyond the last `average_last`."""
        atomic_torch_save(self.ckpt_dir / snapshot_name(self.state.step), ckpt_io.without_resume_state(ckpt))
        for old in snapshots(self.ckpt_dir)[: -self.tc.average_last]:
            old.unlink(missing_ok=True)

    # Training ------------------------------------------------------------------------------
    def _finished(self) -> bool:
        tc, st = self.tc, self.state
        if tc.max_steps and st.step >= tc.max_steps:
            return True
        if tc.max_minutes and st.train_seconds >= 60 * tc.max_minutes:
            return True
        return st.epoch >= tc.max_epochs

    def train_step(self, micro_batches: list) -> dict[str, float] | None:
        """One optimizer update over `accumulate` micro-batches; None if the loss was not finite."""
        tc = self.tc
        self.model.train()
        lr = learning_rate(self.state.step + 1, tc.lr, tc.warmup_steps, tc.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        d = self.dist
        batches = [b.to(self.device) for b in micro_batches]
        # Normalize by the target tokens of the whole update, over all ranks.
        (target_tokens,) = distributed.all_sum([sum(int((b.tgt_out != PAD_ID).sum()) for b in batches)], d)
        total_loss = total_nll = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not d.enabled else self.step_model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss, nll, _ = batch_loss(self.step_model, batch, tc.label_smoothing)
                scaled = loss / target_tokens
                if d.enabled:
                    scaled = scaled * d.world  # DDP averages gradients over ranks; undo that to sum them
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            total_loss += float(loss.detach())
            total_nll += float(nll)
        total_loss, total_nll, tokens = distributed.all_sum(
            [total_loss, total_nll, sum(b.num_tokens for b in batches)], d
        )
        if not math.isfinite(total_loss):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = tc.clip_norm if tc.clip_norm > 0 else float("inf")  # inf: measure the norm, clip nothing
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if self.scaler is None and not torch.isfinite(norm):  # finite loss, overflowing gradient
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return {"loss": total_loss / target_tokens, "nll": total_nll / target_tokens, "lr": lr,
                "grad_norm": float(norm), "tokens": tokens}

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            if self.stop_signal is not None:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum
            print("\nstopping: saving a resumable checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def fit(self) -> None:
        tc, st = self.tc, self.state
        self._install_signal_handlers()
        train = self.data.splits["train"]
        progress = tqdm(total=tc.max_steps or None, initial=st.step, disable=not tc.progress, unit="step",
                        dynamic_ncols=True, file=sys.stderr)
        window_tokens, window_time = 0, 0.0
        consecutive_bad = 0
        d = self.dist
        per_update = tc.accumulate * d.world  # batches consumed by one update across all ranks
        last_validated = -1
        while not self._finished():
            batches = bucket_batches(self.src_lens, self.tgt_lens, tc.max_tokens, seed=tc.seed, epoch=st.epoch)
            if st.batch_in_epoch == 0 and st.epoch == 0:
                log.info("epoch of %d batches, padding waste %.1f%%", len(batches),
                         100 * padding_waste(batches, self.src_lens, self.tgt_lens))
            # Under DDP an epoch's last, incomplete group is dropped so every rank has batches.
            usable = len(batches) if not d.enabled else len(batches) - len(batches) % per_update
            if usable == 0:
                raise UserError(f"the training split gives {len(batches)} batches, fewer than one update needs "
                                f"(train.accumulate x processes = {per_update}); lower train.max_tokens")
            if st.batch_in_epoch >= usable:  # e.g. resumed with other batching settings
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0
                continue
            while st.batch_in_epoch < usable and not self._finished():
                start = time.perf_counter()
                group = batches[st.batch_in_epoch : st.batch_in_epoch + per_update]
                stats = self.train_step([collate(train, idx) for idx in distributed.shard(group, d, tc.accumulate)])
                st.batch_in_epoch += len(group)
                if stats is None:
                    st.nonfinite_steps += 1
                    consecutive_bad += 1
                    log.warning("non-finite loss at step %d: update skipped (%d in a row)",
                                st.step + 1, consecutive_bad)
                    if consecutive_bad >= tc.max_bad_steps:
                        raise UserError(
                            f"{consecutive_bad} non-finite losses in a row (lower train.lr?); "
                            f"last good checkpoint: {self.last_path if self.last_path.exists() else 'none'}"
                        )
                    if st.batch_in_epoch >= usable:
                        st.epoch, st.batch_in_epoch = st.epoch + 1, 0
                        break
                    continue
                consecutive_bad = 0
                st.step += 1
                # Ranks agree on the clock (time limit) and on a stop request (signal on any rank).
                elapsed, stop_votes = distributed.all_sum(
                    [time.perf_counter() - start, float(self.stop_signal is not None)], d
                )
                elapsed /= d.world
                st.train_seconds += elapsed
                st.train_tokens += int(stats["tokens"])
                window_tokens += int(stats["tokens"])
                window_time += elapsed
                progress.update(1)
                if (st.step % tc.log_every == 0 or st.step == 1) and self.writer is not None:
                    tok_s = window_tokens / max(window_time, 1e-9)
                    progress.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{tok_s:,.0f}",
                                         epoch=st.epoch)
                    for key in ("loss", "lr", "grad_norm"):
                        self.writer.add_scalar(f"train/{key}", stats[key], st.step)
                    self.writer.add_scalar("train/tokens_per_sec", tok_s, st.step)
                    window_tokens, window_time = 0, 0.0
                end_of_epoch = st.batch_in_epoch >= usable
                if end_of_epoch:
                    st.epoch += 1
                    st.batch_in_epoch = 0
                validate_now = (tc.eval_every and st.step % tc.eval_every == 0) or (not tc.eval_every and end_of_epoch)
                if validate_now or self._finished():
                    last_validated = st.step
                    stop_early = distributed.any_rank(self.validate() if d.main else False, d)
                    self.save_last()
                    if stop_early:
                        progress.close()
                        log.info("early stopping: no BLEU gain in %d validations", tc.patience)
                        return
                elif tc.save_every and st.step % tc.save_every == 0:
                    self.save_last()
                if stop_votes:
                    if last_validated != st.step:
                        self.save_last()
                    progress.close()
                    raise KeyboardInterrupt
                if end_of_epoch:
                    break  # the next epoch has its own batch order
        progress.close()
        if last_validated != st.step:
            self.save_last()

    # Validation ----------------------------------------------------------------------------
    def _valid_split(self) -> Split:
        valid = self.data.splits["valid"]
        n = self.tc.valid_max_sentences
        return Split(valid.src_text[:n], valid.tgt_text[:n], valid.src[:n], valid.tgt[:n]) if n else valid

    def _valid_translations(self, valid: Split) -> tuple[list[str], dict[str, Any]]:
        """Greedy translations of the validation split and their BLEU/chrF (what selects checkpoints)."""
        greedy = DecodeConfig(beam_size=1, max_len_a=self.cfg.decode.max_len_a, max_len_b=self.cfg.decode.max_len_b,
                              length_penalty=self.cfg.decode.length_penalty)
        hyps = translate_ids(self.model, valid.src, greedy, self.device)
        text = self.data.tokenizer.decode_tgt([h[0].tokens for h in hyps])
        return text, score_translations(text, valid.tgt_text)

    def validate(self) -> bool:
        """Loss, greedy BLEU/chrF, heatmap; save best and last. Returns True to stop early."""
        st, tc = self.state, self.tc
        valid = self._valid_split()
        start = time.perf_counter()
        loss = validation_loss(self.model, valid, tc.max_tokens, self.device)
        text, scores = self._valid_translations(valid)
        improved = scores["bleu"] > st.best_bleu
        if improved:
            st.best_bleu, st.best_step, st.bad_validations = scores["bleu"], st.step, 0
        else:
            st.bad_validations += 1
        record = {"step": st.step, "epoch": st.epoch, "minutes": st.train_seconds / 60, "valid_loss": loss,
                  "valid_ppl": math.exp(min(loss, 50)), "valid_bleu": scores["bleu"], "valid_chrf": scores["chrf"]}
        st.history.append(record)
        w = self.writer
        w.add_scalar("valid/loss", loss, st.step)
        w.add_scalar("valid/ppl", record["valid_ppl"], st.step)
        w.add_scalar("valid/bleu", scores["bleu"], st.step)
        w.add_scalar("valid/chrf", scores["chrf"], st.step)
        samples = "\n\n".join(
            f"**src:** {valid.src_text[i]}  \n**ref:** {valid.tgt_text[i]}  \n**hyp:** {text[i]}"
            for i in range(min(tc.samples, len(valid)))
        )
        w.add_text("valid/samples", samples, st.step)
        self._log_heatmap(valid)
        w.flush()
        if improved:
            atomic_torch_save(self.best_path, self._pack(resumable=False))
        tqdm.write(
            f"step {st.step} epoch {st.epoch} | valid loss {loss:.3f} ppl {record['valid_ppl']:.2f} "
            f"BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f} | best {st.best_bleu:.2f} @ {st.best_step}"
            f"{' *' if improved else ''} | {time.perf_counter() - start:.1f}s",
            file=sys.stderr,
        )
        self._write_metrics("running")
        return bool(tc.patience) and st.bad_validations >= tc.patience

    @torch.no_grad()
    def _log_heatmap(self, valid: Split) -> None:
        """Teacher-forced cross-attention of a fixed validation sentence, head-averaged."""
        from mt.plot import heatmap

        self.model.eval()
        lengths = [len(s) for s in valid.src]
        index = min(range(len(valid)), key=lambda i: abs(lengths[i] - 12))  # a mid-length sentence
        batch = collate(valid, [index]).to(self.device)
        _, attention = self.model(batch.src, batch.tgt_in, need_weights=True)
        tok = self.data.tokenizer
        src = tok.src_pieces(valid.src[index]) + ["</s>"]
        tgt = ["<s>"] + tok.tgt_pieces(valid.tgt[index])
        layers = sorted({len(attention) - 1, (len(attention) - 1) // 2})
        for layer in layers:
            fig = heatmap(attention[layer][0].mean(0).cpu(), src, tgt, f"step {self.state.step}, layer {layer}")
            self.writer.add_figure(f"attention/layer{layer}", fig, self.state.step, close=True)

    # Test ------------------------------------------------------------------------------------
    def average(self) -> dict[str, Any]:
        """Average the kept snapshots; keep the average if it beats best.pt on the validation split."""
        paths = snapshots(self.ckpt_dir)
        if self.tc.average_last < 2 or len(paths) < 2:
            return {}
        averaged = average_checkpoints(paths)
        self.model.load_state_dict(averaged["model"])
        _, scores = self._valid_translations(self._valid_split())
        atomic_torch_save(self.averaged_path, averaged)
        better = scores["bleu"] > self.state.best_bleu
        log.info("average of %d snapshots (steps %s): valid BLEU %.2f vs best.pt %.2f -> testing %s", len(paths),
                 ", ".join(p.stem.split("-")[1].lstrip("0") for p in paths), scores["bleu"], self.state.best_bleu,
                 "the average" if better else "best.pt")
        return {"averaged_checkpoints": len(paths), "averaged_valid_bleu": scores["bleu"],
                "averaged_valid_chrf": scores["chrf"], "tested_checkpoint": "averaged.pt" if better else "best.pt"}

    def test(self, checkpoint: Path) -> dict[str, Any]:
        """Decode the test split with `checkpoint` (if it exists) and the configured decoder."""
        if checkpoint.exists():
            self.model.load_state_dict(ckpt_io.read(checkpoint)["model"])
        test = self.data.splits["test"]
        start = time.perf_counter()
        hyps = translate_ids(self.model, test.src, self.cfg.decode, self.device)
        text = self.data.tokenizer.decode_tgt([h[0].tokens for h in hyps])
        seconds = time.perf_counter() - start
        (self.run_dir / "test.hyp.txt").write_text("".join(t + "\n" for t in text), encoding="utf-8")
        (self.run_dir / "test.ref.txt").write_text("".join(t + "\n" for t in test.tgt_text), encoding="utf-8")
        scores = score_translations(text, test.tgt_text)
        return {"test_bleu": scores["bleu"], "test_chrf": scores["chrf"], "bleu_signature": scores["bleu_signature"],
                "chrf_signature": scores["chrf_signature"], "test_decode_seconds": seconds}

    def _write_metrics(self, status: str, test: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.dist.main:
            return {}
        st = self.state
        last = st.history[-1] if st.history else {}
        metrics: dict[str, Any] = {
            "status": status,
            "run_dir": str(self.run_dir),
            "overrides": self.overrides,
            "steps": st.step,
            "epochs": st.epoch,
            "train_minutes": st.train_seconds / 60,
            "tokens_per_sec": st.train_tokens / max(st.train_seconds, 1e-9),
            "parameters": self.model.num_parameters() if hasattr(self, "model") else None,  # None: setup failed
            "best_valid_bleu": st.best_bleu if st.best_bleu >= 0 else None,
            "best_step": st.best_step,
            "valid_loss": last.get("valid_loss"),
            "nonfinite_steps": st.nonfinite_steps,
            "processes": self.dist.world,
            "ddp_max_param_divergence": self.ddp_divergence,
            "history": st.history,
            "config": {"data": asdict(self.cfg.data), "model": asdict(self.cfg.model), "train": asdict(self.cfg.train),
                       "decode": asdict(self.cfg.decode)},
        }
        if test:
            metrics.update(test)
        atomic_write_json(self.run_dir / "metrics.json", metrics)
        return metrics

    def finish(self) -> dict[str, Any]:
        averaging = self.average()
        chosen = self.averaged_path if averaging.get("tested_checkpoint") == "averaged.pt" else self.best_path
        test = {**averaging, **self.test(chosen)}
        metrics = self._write_metrics("completed", test)
        hparams = {k: v for k, v in flat_hparams(self.cfg).items()}
        self.writer.add_hparams(
            hparams,
            {"hparam/test_bleu": test["test_bleu"], "hparam/best_valid_bleu": self.state.best_bleu,
             "hparam/test_chrf": test["test_chrf"]},
            run_name=".",
        )
        self.writer.close()
        return metrics


def flat_hparams(cfg: MTConfig) -> dict[str, Any]:
    """Scalar hyperparameters for TensorBoard's HParams plugin."""
    out: dict[str, Any] = {}
    for group in ("data", "model", "train", "decode"):
        for key, value in asdict(getattr(cfg, group)).items():
            if isinstance(value, (int, float, str, bool)):
                out[f"{group}.{key}"] = value
    return out


def run(cfg: MTConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train, validate, test; returns the metrics written to run_dir/metrics.json."""
    trainer = Trainer(cfg, run_dir, overrides)
    try:
        trainer.setup()
        trainer.fit()
        trainer.ddp_divergence = distributed.max_param_divergence(trainer.model, trainer.dist)
    except KeyboardInterrupt:
        distributed.shutdown(trainer.dist)
        if trainer.dist.main and trainer.last_path.exists():
            print(f"interrupted at step {trainer.state.step}; resumable checkpoint: {trainer.last_path}\n"
                  f"resume with: python -m mt.train {' '.join(overrides or [])} train.resume=true "
                  f"hydra.run.dir={run_dir}", file=sys.stderr)
        trainer._write_metrics("interrupted")
        raise
    except UserError:
        with contextlib.suppress(OSError):  # the run directory itself may be what failed
            trainer._write_metrics("failed")
        raise
    if not trainer.dist.main:  # rank 0 tests and reports
        distributed.shutdown(trainer.dist)
        return {}
    metrics = trainer.finish()
    distributed.shutdown(trainer.dist)
    print(f"done: test BLEU {metrics['test_bleu']:.2f} chrF {metrics['test_chrf']:.2f} "
          f"({metrics['bleu_signature']})\n"
          f"  best checkpoint: {trainer.best_path}\n  tensorboard:     tensorboard --logdir {run_dir / 'tb'}\n"
          f"  metrics:         {run_dir / 'metrics.json'}", file=sys.stderr)
    return metrics


def _main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from mt.cli import hydra_entry
    from mt.config import to_dataclass

    @hydra.main(version_base="1.3", config_path="../configs", config_name="config")
    def task(dcfg: DictConfig) -> float | None:
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        multirun = hc.mode == RunMode.MULTIRUN
        try:
            metrics = run(to_dataclass(dcfg), run_dir, list(hc.overrides.task))
        except UserError as err:
            print(f"mt.train: error: {err}", file=sys.stderr)
            if multirun:  # one failed job must not end the sweep; compare shows it as failed
                return None
            sys.exit(2)
        except KeyboardInterrupt:
            sys.exit(130)
        return metrics.get("test_bleu")

    hydra_entry(task, "mt.train")

if __name__ == "__main__":
    _main()
