"""Training loop: `python -m mt.train [overrides]` (Hydra), `make train`.

Resumable exactly: the checkpoint holds model, optimizer, step, epoch, position in the
epoch's batch order (which depends only on seed and epoch) and the RNG state.
The checkpoint format lives in mt.checkpoint, the run's files in mt.rundir, what the run
reports (TensorBoard, metrics.json) in mt.runlog; this module is the loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mt import checkpoint as ckpt_io
from mt import distributed, rundir
from mt import validation as scoring
from mt.align.teacher import PieceLinks, teacher_links
from mt.average import average_if_better, snapshot_name, snapshots
from mt.batching import EpochPlan, Split, collate, epoch_plan, padding_waste, used_ids
from mt.checkpoint import TrainState
from mt.config import MTConfig, validate
from mt.data import PreparedData, prepare
from mt.engine import Engine, training_device
from mt.errors import UserError
from mt.fileio import atomic_torch_save, atomic_write_text
from mt.model import SHORTLIST_MULTIPLE, Transformer
from mt.paths import CONFIG_DIR
from mt.rundir import RunDir, RunLock, claim
from mt.runlog import RunLog, RunMetrics, selection_rule, summary
from mt.tokenizer import Tokenizer

log = logging.getLogger("mt.train")

# A linear or cosine lr schedule is fitted to train.max_minutes after FIT_SCHEDULE_AFTER updates, from
# the speed of those after the first FIT_SPEED_FROM (which pay for memory warm-up, compilation, tuning):
# early enough to change little before it.
FIT_SPEED_FROM = 20
FIT_SCHEDULE_AFTER = 100
# The share of the time budget the fitted schedule plans for, leaving room for the machine slowing down.
FIT_SCHEDULE_MARGIN = 0.97


@dataclass
class Throughput:
    """Tokens and seconds since the last logged update."""

    tokens: int = 0
    seconds: float = 0.0

    def take(self) -> float:
        rate = self.tokens / max(self.seconds, 1e-9)
        self.tokens, self.seconds = 0, 0.0
        return rate


class Trainer:
    def __init__(self, cfg: MTConfig, run_dir: Path, overrides: list[str] | None = None):
        self.cfg, self.tc, self.overrides = validate(cfg), cfg.train, overrides or []
        self.paths = RunDir(Path(run_dir))
        self.device, self.dist = training_device(self.tc)
        self.stop_signal: int | None = None
        self.state = TrainState()
        self.lock: RunLock | None = None
        self.log: RunLog | None = None  # exists once the run directory is ours
        self.model: Transformer | None = None
        self.ddp_divergence: float | None = None  # max |param - rank 0's| after training (DDP check)
        self.teacher: PieceLinks | None = None  # the aligning heads' teacher links, before null links
        self.teacher_entries: dict[str, float | int] = {}  # its AER on data.align_gold, for metrics.json

    # Setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, tc = self.cfg, self.tc
        torch.manual_seed(tc.seed)
        # Rank 0 locks the directory and refuses to clobber a run; the others only need it to exist.
        self.lock = claim(self.paths, tc.resume, tc.overwrite, lock=self.dist.main)
        self.log = RunLog(self.paths, cfg, self.overrides, enabled=self.dist.main)
        resume_ckpt = ckpt_io.read_for_resume(self.paths.last) if tc.resume else None
        if resume_ckpt is not None:
            ckpt_io.check_resumed_teacher(resume_ckpt, tc, self.paths.last)
        self._prepare_data(ckpt_io.tokenizer_of(resume_ckpt) if resume_ckpt else None)
        tok = self.data.tokenizer
        model = Transformer(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size, joint_vocab=tok.joint)
        if cfg.model.output_shortlist:  # a resumed run reloads the same set from its checkpoint
            used = torch.from_numpy(used_ids(self.data.splits["train"].tgt, tok.tgt_vocab_size))
            model.set_emittable(used, SHORTLIST_MULTIPLE)
            log.info(f"output shortlist: {len(model.shortlist):,} of {tok.tgt_vocab_size:,} pieces")
        self.model = model
        self.engine = Engine.build(model, tc, self.device, self.dist)
        if resume_ckpt is not None:
            self.state = ckpt_io.restore_training(resume_ckpt, self.engine, self.paths.last)
            if cfg.model.output_shortlist:  # the checkpoint's shortlist holds; new target pieces train as unk
                unlisted = int((used & ~model.emittable.cpu()).sum())
                if unlisted:
                    log.warning(
                        f"the training targets have {unlisted:,} pieces outside the resumed run's output "
                        "shortlist (the data changed?): they are trained as unk"
                    )
            st = self.state
            log.info(f"resumed from {self.paths.last} at step {st.step} (epoch {st.epoch}, batch {st.batch_in_epoch})")
        self.log.open_tensorboard(self.state.step)
        gold_cfg = cfg.data.align_gold
        self.gold = scoring.load_gold(gold_cfg, tok, cfg.model.max_positions - 1) if gold_cfg.enabled else None
        if self.gold is not None and self.teacher is not None and self.dist.main:
            self._score_teacher()
        self.teacher = None  # train.align holds the links (with null links, a second copy)
        self.src_lens, self.tgt_lens = self.data.splits["train"].lengths()
        self.finish_rows = self._finish_rows()
        if cfg.data.corpora:
            log.info(f"checkpoint selection: {selection_rule(self.data.corpora)}")
        precision = self.engine.amp_dtype or "fp32"
        log.info(f"model: {model.num_parameters():,} parameters, device {self.device}, precision {precision}")
        self.write_metrics("running")

    def _finish_rows(self) -> np.ndarray | None:
        """The training pairs of data.finish_on (the corpus the last updates train on alone)."""
        data = self.cfg.data
        if not data.finish_on:
            return None
        source = self.data.splits["train"].source
        assert source is not None, "a training mix of data.corpora records each pair's corpus"
        rows = np.flatnonzero(source == self.data.corpora.index(data.finish_on))
        name, tc = data.finish_on, self.tc
        if len(rows) == 0:
            raise UserError(f"data.finish_on={name} has no training pairs in the mix (is its weight 0?)")
        # Checked now, not after the mixed updates: each pass over the corpus is an epoch.
        per_update, plan = self._updates_per_group(), self._plan(rows, epoch=0)
        if plan.usable == 0:
            raise UserError(
                f"data.finish_on={name}'s {len(rows):,} training pairs give {len(plan.batches)} batches, fewer than "
                f"one update needs (train.accumulate x processes = {per_update})"
            )
        self.finish_epochs = math.ceil(data.finish_updates / math.ceil(plan.usable / per_update))
        if self.finish_epochs >= tc.max_epochs:
            raise UserError(
                f"data.finish_updates={data.finish_updates} takes about {self.finish_epochs} passes over "
                f"data.finish_on={name}'s pairs: raise train.max_epochs ({tc.max_epochs})"
            )
        return rows

    def _score_teacher(self) -> None:
        scored = scoring.teacher_on_gold(self.teacher, self.data.splits["train"], self.gold)
        if scored is None:
            log.info("teacher alignments: no data.align_gold pair is a training pair, so the teacher is not scored")
            return
        score, pairs = scored
        log.info(
            f"teacher alignments on {pairs} of {len(self.gold.links)} data.align_gold pairs (training pairs too): "
            f"AER {100 * score.aer:.2f}, precision {100 * score.precision:.1f}, recall {100 * score.recall:.1f}"
        )
        self.teacher_entries = {
            "teacher_gold_aer": score.aer,
            "teacher_gold_precision": score.precision,
            "teacher_gold_recall": score.recall,
            "teacher_gold_pairs": pairs,
        }

    def _prepare_data(self, tokenizer: Tokenizer | None) -> None:
        # Rank 0 prepares first (training or finding the tokenizer, computing the teacher links);
        # the other ranks take its copies: sentencepiece and eflomal (which samples) run per rank
        # could differ, and the ranks' token ids and teachers must not.
        teacher = None
        if self.dist.main:
            self.data: PreparedData = prepare(self.cfg.data, tokenizer)
            if self.tc.align_weight > 0:  # the aligning heads' teacher links
                train = self.data.splits["train"]
                teacher = teacher_links(
                    train.src,
                    train.tgt,
                    self.data.tokenizer,
                    self.cfg.data.cache_dir,
                    self.tc.align_teacher,
                    self.tc.align_teacher_samplers,
                    self.tc.align_teacher_runs,
                )
            self.data.tokenizer.save(self.paths.tokenizer)
        protos = (self.data.tokenizer.src_proto, self.data.tokenizer.tgt_proto) if self.dist.main else None
        protos = distributed.broadcast(protos, self.dist)
        if not self.dist.main:
            self.data = prepare(self.cfg.data, Tokenizer(*protos))
        if self.tc.align_weight > 0:
            self._use_teacher(distributed.broadcast(teacher, self.dist))
        for name, rep in self.data.reports.items():
            if rep.empty or rep.too_long:
                limit = self.cfg.data.max_len
                log.info(
                    f"{name}: kept {rep.kept} pairs, dropped {rep.empty} empty and {rep.too_long} longer than "
                    f"{limit} tokens"
                )

    def _use_teacher(self, teacher: PieceLinks) -> None:
        train = self.data.splits["train"]
        train.align = self.teacher = teacher
        if self.cfg.model.align_null:
            src_lens, tgt_lens = train.lengths()  # + 1 each (eos)
            train.align = teacher.with_null(src_lens - 1, tgt_lens - 1)

    def _pack(self, resumable: bool) -> ckpt_io.ModelFile:
        return ckpt_io.pack_training(self.engine, self.data.tokenizer, self.state, self.cfg.data, resumable)

    # Checkpoints ---------------------------------------------------------------------------
    def save_last(self) -> None:
        """Every rank must call this (RNG states are gathered); rank 0 writes."""
        ckpt = self._pack(resumable=True)
        if self.dist.main:
            atomic_torch_save(self.paths.last, ckpt)
            if self.tc.average_last:
                self._snapshot(ckpt)

    def _snapshot(self, ckpt: ckpt_io.ModelFile) -> None:
        """Keep this step's weights for averaging; drop snapshots beyond the last `average_last`."""
        directory = self.paths.checkpoints
        atomic_torch_save(directory / snapshot_name(self.state.step), ckpt_io.without_resume_state(ckpt))
        for old in snapshots(directory)[: -self.tc.average_last]:
            old.unlink(missing_ok=True)

    # Training ------------------------------------------------------------------------------
    def _finished(self) -> bool:
        tc, st = self.tc, self.state
        if st.last_step(tc) and st.step >= st.last_step(tc):
            return True
        if tc.max_minutes and st.train_seconds >= 60 * tc.max_minutes:
            return True
        return st.epoch >= tc.max_epochs

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            if self.stop_signal is not None:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum
            print("\nstopping: saving a resumable checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def fit(self) -> None:
        """Train until a limit (steps, minutes, epochs), early stopping, or a stop signal."""
        st = self.state
        self._install_signal_handlers()
        steps, quiet = st.last_step(self.tc) or None, not self.tc.progress
        self.progress = tqdm(
            total=steps, initial=st.step, disable=quiet, unit="step", dynamic_ncols=True, file=sys.stderr
        )
        self.window, self.consecutive_bad, self.last_validated = Throughput(), 0, -1
        try:
            while not self._finished():
                if self._finish_due():
                    self._start_finish()
                plan = self._epoch_plan()
                if st.batch_in_epoch >= plan.usable:  # e.g. resumed with other batching settings
                    self._next_epoch()
                elif self._run_epoch(plan):
                    log.info("early stopping: no BLEU gain in %d validations", self.tc.patience)
                    return
        finally:
            self.progress.close()
        if self.last_validated != st.step:
            self.save_last()

    def _updates_per_group(self) -> int:
        return self.tc.accumulate * self.dist.world  # batches consumed by one update across all ranks

    def _finish_due(self) -> bool:
        """The mix has had its updates: what is left of training draws from data.finish_on alone."""
        data, st = self.cfg.data, self.state
        return bool(data.finish_on) and st.finish_epoch < 0 and st.step >= st.last_step(self.tc) - data.finish_updates

    def _start_finish(self) -> None:
        # A new epoch (its own batch order, over the one corpus), so a resumed run knows where it began.
        st = self.state
        if st.batch_in_epoch > 0:
            self._next_epoch()
        st.finish_epoch = st.epoch
        corpus, rows = self.cfg.data.finish_on, self.finish_rows
        log.info(
            f"step {st.step}: the last {st.last_step(self.tc) - st.step} updates train on {corpus} alone "
            f"({len(rows):,} of the mix's {len(self.src_lens):,} pairs), from epoch {st.epoch}"
        )
        if st.epoch + self.finish_epochs > self.tc.max_epochs:
            log.warning(
                f"train.max_epochs ({self.tc.max_epochs}) may stop training before these updates: "
                f"they take about {self.finish_epochs} passes over {corpus}"
            )

    def _plan(self, rows: np.ndarray | None, epoch: int) -> EpochPlan:
        """The batches of an epoch over the training split, or over its `rows` only."""
        tc, per_update = self.tc, self._updates_per_group()
        if rows is None:
            return epoch_plan(self.src_lens, self.tgt_lens, tc.max_tokens, tc.seed, epoch, per_update, self.dist.world)
        plan = epoch_plan(
            self.src_lens[rows], self.tgt_lens[rows], tc.max_tokens, tc.seed, epoch, per_update, self.dist.world
        )
        return EpochPlan([rows[batch] for batch in plan.batches], plan.usable)  # positions in rows -> rows

    def _epoch_plan(self) -> EpochPlan:
        st = self.state
        finishing = self.finish_rows is not None and 0 <= st.finish_epoch <= st.epoch
        plan = self._plan(self.finish_rows if finishing else None, st.epoch)
        if st.batch_in_epoch == 0 and st.epoch == 0:
            waste = padding_waste(plan.batches, self.src_lens, self.tgt_lens)
            log.info(f"epoch of {len(plan.batches)} batches, padding waste {100 * waste:.1f}%")
        if plan.usable == 0:
            raise UserError(
                f"the training split gives {len(plan.batches)} batches, fewer than one update needs "
                f"(train.accumulate x processes = {self._updates_per_group()}); lower train.max_tokens"
            )
        return plan

    def _next_epoch(self) -> None:
        self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0  # its own batch order

    def _run_epoch(self, plan: EpochPlan) -> bool:
        """Updates until the epoch ends or training is finished; True to stop early."""
        st, train, per_update = self.state, self.data.splits["train"], self._updates_per_group()
        while st.batch_in_epoch < plan.usable and not self._finished() and not self._finish_due():
            start = time.perf_counter()
            group = plan.batches[st.batch_in_epoch : st.batch_in_epoch + per_update]
            micro_batches = [collate(train, idx) for idx in distributed.shard(group, self.dist, self.tc.accumulate)]
            stats = self.engine.update(micro_batches, st.step + 1, st.last_step(self.tc))
            st.batch_in_epoch += len(group)
            end_of_epoch = st.batch_in_epoch >= plan.usable
            if stats is None:
                self._skipped_update()
            elif self._after_update(stats, time.perf_counter() - start, end_of_epoch):
                return True
            if end_of_epoch:
                if stats is None:  # _after_update rolls over before it saves
                    self._next_epoch()
                return False
        return False

    def _skipped_update(self) -> None:
        st = self.state
        st.nonfinite_steps += 1
        self.consecutive_bad += 1
        log.warning("non-finite loss at step %d: update skipped (%d in a row)", st.step + 1, self.consecutive_bad)
        if self.consecutive_bad >= self.tc.max_bad_steps:
            last = self.paths.last if self.paths.last.exists() else "none"
            raise UserError(
                f"{self.consecutive_bad} non-finite losses in a row (lower train.lr?); last good checkpoint: {last}"
            )

    def _after_update(self, stats: dict[str, float], seconds: float, end_of_epoch: bool) -> bool:
        """Count the update, log it, validate and save when due; True to stop early."""
        tc, st = self.tc, self.state
        self.consecutive_bad = 0
        st.step += 1
        # Ranks agree on the clock (time limit) and on a stop request (signal on any rank).
        seconds, stop_votes = distributed.all_sum([seconds, float(self.stop_signal is not None)], self.dist)
        self._count(stats, seconds / self.dist.world)
        if st.step == FIT_SPEED_FROM:
            st.seconds_at_speed_start = st.train_seconds
        if st.step == FIT_SCHEDULE_AFTER:
            self._fit_schedule()
        if end_of_epoch:
            self._next_epoch()  # before saving: a resumed run starts the next epoch
        if (tc.eval_every and st.step % tc.eval_every == 0) or (not tc.eval_every and end_of_epoch) or self._finished():
            self.last_validated = st.step
            stop_early = distributed.any_rank(self.validate() if self.dist.main else False, self.dist)
            self.save_last()
            if stop_early:
                return True
        elif tc.save_every and st.step % tc.save_every == 0:
            self.save_last()
        if stop_votes:
            if self.last_validated != st.step:
                self.save_last()
            raise KeyboardInterrupt
        return False

    def _fit_schedule(self) -> None:
        """End a linear or cosine lr schedule where train.max_minutes will stop training, if that comes
        before train.max_steps: the run then ends annealed instead of being cut at a high rate.
        Fitted once, kept in the checkpoint: a resumed run follows it (a run resumed before the fit
        counts its restart's warm-up in the speed)."""
        tc, st, finish = self.tc, self.state, self.cfg.data.finish_updates
        if tc.lr_schedule == "inverse_sqrt" or not (tc.max_minutes and tc.max_steps) or st.schedule_steps:
            return
        seconds_per_update = (st.train_seconds - st.seconds_at_speed_start) / (st.step - FIT_SPEED_FROM)
        seconds_left = FIT_SCHEDULE_MARGIN * 60 * tc.max_minutes - st.train_seconds
        fits = st.step + int(seconds_left / max(seconds_per_update, 1e-9))
        if fits >= tc.max_steps:
            return
        if fits <= max(tc.warmup_steps, st.step + finish):
            needs = f"{tc.warmup_steps} warmup updates" + (f" and data.finish_updates={finish}" if finish else "")
            log.warning(
                f"train.max_minutes={tc.max_minutes:g} leaves time for about {fits} updates at this speed, "
                f"too few for the {tc.lr_schedule} schedule's {needs}: the time limit will stop training "
                "before the learning rate has decayed"
            )
            return
        st.schedule_steps, st.schedule_minutes = fits, tc.max_minutes
        self.progress.total = fits
        log.info(
            f"step {st.step}: train.max_minutes={tc.max_minutes:g} leaves time for about {fits} of the "
            f"{tc.max_steps} updates at this speed ({seconds_per_update:.2f} s per update): the "
            f"{tc.lr_schedule} schedule now ends at update {fits}, where training stops"
        )

    def _count(self, stats: dict[str, float], seconds: float) -> None:
        st = self.state
        st.train_seconds += seconds
        st.train_tokens += int(stats["tokens"])
        self.window.tokens += int(stats["tokens"])
        self.window.seconds += seconds
        self.progress.update(1)
        if (st.step % self.tc.log_every == 0 or st.step == 1) and self.dist.main:
            tok_s = self.window.take()
            self.progress.set_postfix(
                loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{tok_s:,.0f}", epoch=st.epoch
            )
            self.log.train_update(st.step, stats, tok_s)

    # Validation and test ---------------------------------------------------------------------
    def validate(self) -> bool:
        """Loss, greedy BLEU/chrF (per corpus, and their mean with several), heatmap; save best.
        Returns True to stop early."""
        from mt.plot import validation_figures

        st, tc = self.state, self.tc
        valid = self._valid_splits()
        start = time.perf_counter()
        losses, decoded = {}, {}
        for name, split in valid.items():
            losses[name] = scoring.validation_loss(self.model, split, tc.max_tokens, self.device)
            decoded[name] = self._greedy(split)
        several = len(valid) > 1
        loss = sum(losses.values()) / len(losses)
        overall = scoring.combined(decoded)
        bleu, chrf = overall.scores["bleu"], overall.scores["chrf"]
        improved = bleu > st.best_bleu
        if improved:
            st.best_bleu, st.best_step, st.bad_validations = bleu, st.step, 0
        else:
            st.bad_validations += 1
        record = scoring.validation_record(st.step, st.epoch, st.train_seconds / 60, loss, overall.scores)
        if several:
            record["corpora"] = {name: scoring.corpus_validation(losses[name], decoded[name].scores) for name in valid}
        figures, samples = [], {}
        for name, split in valid.items():
            tagged = validation_figures(self.model, split, self.data.tokenizer, self.device, st.step, self._aligning())
            figures += [(f"{tag}/{name}" if several else tag, fig) for tag, fig in tagged]
            text = scoring.samples_markdown(split, decoded[name].text, tc.samples)
            samples[f"valid/{name}/samples" if several else "valid/samples"] = text
        aer_text = ""
        if self.gold is not None:
            aligned = scoring.gold_alignment(self.model, self.gold, tc.align_weight > 0, self.device)
            record.update(scoring.alignment_entries(aligned.score))  # type: ignore[typeddict-item]
            figures.append(self._gold_figure(aligned, st.step))
            aer_text = f" AER {100 * aligned.score.aer:.1f}"
        st.history.append(record)  # type: ignore[arg-type]
        self.log.validation(record, samples, figures)
        if improved:
            atomic_torch_save(self.paths.best, self._pack(resumable=False))
        scores = f"valid loss {loss:.3f} ppl {record['valid_ppl']:.2f} BLEU {bleu:.2f} chrF {chrf:.2f}"
        if several:
            scores = (
                " | ".join(
                    f"{name}: loss {losses[name]:.3f} BLEU {d.scores['bleu']:.2f} chrF {d.scores['chrf']:.2f}"
                    for name, d in decoded.items()
                )
                + f" | mean: loss {loss:.3f} BLEU {bleu:.2f} chrF {chrf:.2f}"
            )
        log.info(
            f"step {st.step} epoch {st.epoch} | {scores}{aer_text} | best {st.best_bleu:.2f} @ {st.best_step}"
            f"{' *' if improved else ''} | {time.perf_counter() - start:.1f}s"
        )
        self.write_metrics("running")
        return bool(tc.patience) and st.bad_validations >= tc.patience

    def _aligning(self):
        """The supervised heads as mt.align reads them (None when train.align_weight is 0)."""
        from mt.align.extract import align_config_for

        if self.tc.align_weight <= 0:
            return None
        return align_config_for({"alignment": ckpt_io.supervised_heads(self.model.config)})

    def _gold_figure(self, aligned: scoring.GoldAlignment, step: int):
        """The word-level alignment matrix of one gold pair (about 12 target words) for TensorBoard."""
        from mt.plot import heatmap

        gold = self.gold
        index = min(range(len(gold.tgt_words)), key=lambda i: (abs(len(gold.tgt_words[i]) - 12), i))
        src = gold.src_words[index][: aligned.matrices[index].size(1)]
        tgt = gold.tgt_words[index][: aligned.matrices[index].size(0)]
        head = "aligning heads" if self.tc.align_weight > 0 else "mean of layers and heads"
        return "alignment/gold", heatmap(
            aligned.matrices[index], src, tgt, f"step {step}, gold pair {index + 1}, {head}"
        )

    def test(self, checkpoint: Path) -> dict[str, Any]:
        """Decode each corpus's test split with `checkpoint` (if it exists) and the configured decoder."""
        if checkpoint.exists():
            self.model.load_state_dict(ckpt_io.read(checkpoint)["model"])
        tests = self.data.held_out("test")
        decoded = {}
        for name, test in tests.items():
            decoded[name] = scoring.decode_and_score(
                self.model, test, self.data.tokenizer, self.cfg.decode, self.device
            )
            corpus = name if len(tests) > 1 else ""  # one corpus: test.hyp.txt; several: test.NAME.hyp.txt
            atomic_write_text(self.paths.test_output("hyp", corpus), "".join(t + "\n" for t in decoded[name].text))
            atomic_write_text(self.paths.test_output("ref", corpus), "".join(t + "\n" for t in test.tgt_text))
        if len(tests) == 1:
            return scoring.test_results(decoded[self.data.corpora[0]])
        return scoring.corpora_test_results(decoded, {name: len(test) for name, test in tests.items()})

    def write_metrics(self, status: str, results: dict[str, Any] | None = None) -> RunMetrics:
        if self.log is None:  # the run directory was never ours: leave whatever is there alone
            return {}
        parameters = self.model.num_parameters() if self.model is not None else None
        results = {**self.teacher_entries, **(results or {})}
        return self.log.write_metrics(status, self.state, parameters, self.dist.world, self.ddp_divergence, results)

    def _valid_splits(self) -> dict[str, Split]:
        """Each corpus's validation sentences (the first train.valid_max_sentences of each)."""
        n = self.tc.valid_max_sentences
        return {name: scoring.first_sentences(split, n) for name, split in self.data.held_out("valid").items()}

    def _greedy(self, split: Split) -> scoring.Decoded:
        greedy = scoring.greedy(self.cfg.decode)
        return scoring.decode_and_score(self.model, split, self.data.tokenizer, greedy, self.device)

    def _greedy_valid(self) -> scoring.Decoded:
        """Greedy translations of the validation sentences and their scores (what selects checkpoints):
        with several corpora, the mean of their scores (scoring.combined)."""
        return scoring.combined({name: self._greedy(split) for name, split in self._valid_splits().items()})

    def finish(self) -> RunMetrics:
        """Average (if configured), test, write the final metrics.json and HParams."""
        averaging, kept = {}, snapshots(self.paths.checkpoints)
        if self.tc.average_last >= 2 and len(kept) >= 2:
            averaging = average_if_better(
                self.model, kept, self.paths.averaged, self.state.best_bleu, self._greedy_valid
            )
        chosen = self.paths.averaged if averaging.get("tested_checkpoint") == "averaged.pt" else self.paths.best
        metrics = self.write_metrics("completed", {**averaging, **self.test(chosen)})
        self.log.close(metrics)
        return metrics

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.lock is not None:
            self.lock.release()


def resume_command(overrides: list[str], run_dir: Path | str) -> str:
    """The command that resumes this run: its overrides (a resumed run's own train.resume=true and
    run directory not repeated), train.resume=true and the run directory."""
    kept = [o for o in overrides if not o.startswith(("train.resume=", "hydra.run.dir="))]
    return " ".join(["python -m mt.train", *kept, "train.resume=true", f"hydra.run.dir={run_dir}"])


def run(cfg: MTConfig, run_dir: Path, overrides: list[str] | None = None) -> RunMetrics:
    """Train, validate, test; returns the metrics written to run_dir/metrics.json."""
    trainer = Trainer(cfg, run_dir, overrides)
    try:
        trainer.setup()
        trainer.fit()
        trainer.ddp_divergence = distributed.max_param_divergence(trainer.model, trainer.dist)
        metrics = trainer.finish() if trainer.dist.main else {}  # rank 0 tests and reports
    except KeyboardInterrupt:
        distributed.shutdown(trainer.dist)
        if trainer.dist.main and trainer.paths.last.exists():
            log.warning(
                f"interrupted at step {trainer.state.step}; resumable checkpoint: {trainer.paths.last}\n"
                f"resume with: {resume_command(overrides or [], run_dir)}"
            )
        trainer.write_metrics("interrupted")
        raise
    except UserError:
        with contextlib.suppress(OSError):  # the run directory itself may be what failed
            trainer.write_metrics("failed")
        raise
    finally:
        trainer.close()
    distributed.shutdown(trainer.dist)
    if metrics:
        log.info(summary(metrics, trainer.paths))
    return metrics


def _main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from mt.cli import hydra_entry
    from mt.config import to_dataclass

    failed_jobs: list[str] = []  # of a sweep: the sweep goes on, then exits non-zero naming them

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def task(dcfg: DictConfig) -> float | None:
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        multirun = hc.mode == RunMode.MULTIRUN
        try:
            metrics = run(to_dataclass(dcfg), run_dir, list(hc.overrides.task))
        except UserError as err:
            log.error(f"mt.train: error: {err}")  # console (stderr) and train.log
            if multirun:  # one failed job must not end the sweep; compare shows it as failed
                failed_jobs.append(f"{run_dir}: {err}")
                return None
            sys.exit(2)
        except KeyboardInterrupt:
            sys.exit(130)
        return metrics.get("test_bleu")

    def refuse_busy_or_finished_run_dir(cfg: MTConfig, hydra_settings: dict[str, str], multirun: bool) -> None:
        if "hydra.run.dir" in hydra_settings and not multirun:  # a named directory may hold a run
            rundir.preflight(RunDir(Path(hydra_settings["hydra.run.dir"])), cfg.train.resume, cfg.train.overwrite)

    hydra_entry(task, "mt.train", preflight=refuse_busy_or_finished_run_dir)
    if failed_jobs:
        print(f"mt.train: error: {len(failed_jobs)} sweep job(s) failed:", *failed_jobs, sep="\n  ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _main()
