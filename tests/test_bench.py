"""scripts/nn_transformer_baseline.py (the plain nn.Transformer that bench_train.py times against
mt's model): the same size as mt's Transformer, and its training step learns. No timings here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mt.batching import Batch, pad, source_tensor
from mt.config import ModelConfig, TrainConfig
from mt.device import CPU_FLAGS
from mt.model import Transformer
from mt.tokenizer import BOS_ID

from .conftest import ROOT, TOY

_spec = importlib.util.spec_from_file_location(
    "nn_transformer_baseline", ROOT / "scripts" / "nn_transformer_baseline.py"
)
baseline = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = baseline  # its dataclass resolves annotations through sys.modules
_spec.loader.exec_module(baseline)
_spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
bench_train = importlib.util.module_from_spec(_spec)
_gemm_spec = importlib.util.spec_from_file_location("bench_gemm", ROOT / "scripts" / "bench_gemm.py")
bench_gemm = importlib.util.module_from_spec(_gemm_spec)
with pytest.MonkeyPatch.context() as patch:  # for the imports only
    patch.setitem(sys.modules, "bench_train", bench_train)  # its dataclasses, and bench_gemm's `from bench_train`
    _spec.loader.exec_module(bench_train)  # its `from nn_transformer_baseline import` finds sys.modules
    _gemm_spec.loader.exec_module(bench_gemm)

VOCAB = 40


def toy_model_config(**overrides) -> ModelConfig:
    cfg = ModelConfig(d_model=32, layers=2, heads=4, ffn_dim=64, dropout=0.0, max_positions=64)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def fixed_batch() -> Batch:
    rng = np.random.default_rng(0)
    src = [rng.integers(4, VOCAB, size=n).tolist() for n in (7, 5, 9, 3)]
    tgt = [rng.integers(4, VOCAB, size=n).tolist() for n in (6, 8, 4, 5)]
    return Batch(
        src=source_tensor(src),  # [4,10] with eos, padded
        tgt_in=pad([[BOS_ID] + t for t in tgt]),  # [4,9]
        tgt_out=source_tensor(tgt),  # [4,9]: ids + eos, padded
        indices=np.arange(4),
    )


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_baseline_has_the_size_of_our_model(norm, tie, positions):
    """Equal parameter counts (tolerance 0), except that with post-norm nn.Transformer keeps its
    final encoder and decoder LayerNorms: exactly 2 x (weight + bias) x d_model more."""
    cfg = toy_model_config(norm=norm, tie_embeddings=tie, positions=positions, encoder_layers=3)
    ours = Transformer(cfg, VOCAB, VOCAB).num_parameters()
    theirs = baseline.NNTransformerBaseline(cfg, VOCAB, VOCAB).num_parameters()
    assert theirs - ours == (4 * cfg.d_model if norm == "post" else 0)


def test_baseline_step_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = toy_model_config()  # dropout 0: the loss is a function of the weights alone
    tc = TrainConfig(lr=1e-3, warmup_steps=0, label_smoothing=0.1)
    trainer = baseline.BaselineTrainer.build(
        baseline.NNTransformerBaseline(cfg, VOCAB, VOCAB), tc, torch.device("cpu"), None
    )
    batch = fixed_batch()
    real = batch.tgt_out != 0
    assert trainer.model(batch.src, batch.tgt_in, real).shape == (int(real.sum()), VOCAB)
    with torch.no_grad():
        before = float(baseline.baseline_loss(trainer.model, batch, tc.label_smoothing))
    reported = trainer.update(batch, step=1)
    with torch.no_grad():
        after = float(baseline.baseline_loss(trainer.model, batch, tc.label_smoothing))
    assert reported == pytest.approx(before, rel=1e-5)  # update reports the loss it stepped on
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert after < before - 0.01, (before, after)


def test_cpu_info_reads_the_model_name_and_bf16_flags():
    intel = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    intel += "flags\t\t: fpu avx512_bf16 amx_bf16 amx_tile\n"
    intel += "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    info = bench_train.cpu_info(intel)
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["cpu_flags"] == {"avx512_bf16": True, "amx_bf16": True, "amx_tile": True}
    lscpu = "Architecture: x86_64\nModel name:   AMD EPYC\nFlags:   fpu avx2 avx512f avx512_bf16\n"
    info = bench_train.cpu_info(lscpu)
    assert info["cpu"] == "AMD EPYC"
    assert info["cpu_flags"] == {"avx512_bf16": True, "amx_bf16": False, "amx_tile": False}
    assert bench_train.cpu_info("")["cpu_flags"] is None  # unknown, not "absent"


def test_race_alternates_the_order_block_by_block_and_switches_untimed_before_each_block():
    calls = []

    def contender(name):
        return bench_train.Contender(
            update=lambda batch: calls.append((name, batch)) or float(batch),  # ints stand in for batches
            activate=lambda: calls.append((name, "on")),
        )

    raced = bench_train.race({"a": contender("a"), "b": contender("b")}, list(range(7)), 2, 2, torch.device("cpu"))
    assert calls == [
        *[("a", "on"), ("a", 0), ("b", "on"), ("b", 0), ("a", "on"), ("a", 1), ("b", "on"), ("b", 1)],  # warm-up
        *[("a", "on"), ("a", 2), ("a", 3), ("b", "on"), ("b", 2), ("b", 3)],  # block 1: a, then b
        *[("b", "on"), ("b", 4), ("b", 5), ("a", "on"), ("a", 4), ("a", 5)],  # block 2: b first
        *[("a", "on"), ("a", 6), ("b", "on"), ("b", 6)],  # block 3, the short rest
    ]
    assert raced.block_losses == {"a": [2.5, 4.5, 6.0], "b": [2.5, 4.5, 6.0]}  # mean loss of each block
    assert [set(block) for block in raced.block_seconds] == [{"a", "b"}] * 3
    for name in "ab":
        assert raced.seconds[name] == pytest.approx(sum(block[name] for block in raced.block_seconds))
    assert raced.block_speedups("a", "b") == [block["a"] / block["b"] for block in raced.block_seconds]
    assert raced.speedup("a", "b") == raced.seconds["a"] / raced.seconds["b"]


def race_steps(contenders_share_one_update: bool) -> list[tuple[str, int, int]]:
    """(contender, batch, step) of every update a race makes, in the order it makes them."""
    seen = []

    def update(name):
        return lambda batch, step: seen.append((name, batch, step)) or 0.0

    if contenders_share_one_update:  # bench_dropout, bench_gemm: one model, one optimizer
        shared = bench_train.numbered(update("model"))
        contenders = {name: bench_train.Contender(shared) for name in "ab"}
    else:  # bench_train: two models, each numbering its own updates
        contenders = {name: bench_train.Contender(bench_train.numbered(update(name))) for name in "ab"}
    bench_train.race(contenders, list(range(6)), 2, 2, torch.device("cpu"))
    return seen


def test_race_numbers_a_shared_model_s_steps_in_the_order_they_run():
    seen = race_steps(contenders_share_one_update=True)
    assert [step for _, _, step in seen] == list(range(1, 13))
    assert [batch for _, batch, _ in seen] == [0, 0, 1, 1, 2, 3, 2, 3, 4, 5, 4, 5]


def test_race_numbers_each_model_s_steps_by_the_batch_s_position():
    seen = race_steps(contenders_share_one_update=False)
    assert all(step == batch + 1 for _, batch, step in seen)
    assert sorted(seen) == sorted((name, batch, batch + 1) for name in "ab" for batch in range(6))


def test_bench_train_imports_as_a_script_and_as_a_module():
    for cmd in (["scripts/bench_train.py", "--help"], ["-m", "scripts.bench_train", "--help"]):
        proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "--steps" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
def test_bench_train_runs_both_models_on_the_toy_corpus(tmp_path):
    out = tmp_path / "train.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--steps", "2", "--warmup", "1"]
    cmd += ["--block", "1", "--json", str(out), "--set", "data=toy", f"data.dir={TOY}"]
    cmd += [f"data.cache_dir={tmp_path / 'cache'}", "model=tiny", "train.threads=1", "--profile", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speedup_vs_nn_transformer: " in proc.stdout
    assert "profile: 2 steps" in proc.stdout
    result = json.loads(out.read_text())
    assert result["precision"] == "fp32"
    assert result["cpu"] and set(result["cpu_flags"] or {}) <= set(CPU_FLAGS)
    assert result["parameters"] == result["baseline_parameters"]  # model=tiny is pre-norm
    assert result["speedup_vs_nn_transformer"] == pytest.approx(
        result["tokens_per_sec"] / result["baseline_tokens_per_sec"]
    )
    assert len(result["speedup_per_block"]) == 2
    profile = result["profile"]  # the per-op table: real ops of a training step, shares of its time
    assert profile["steps"] == 2 and profile["ops"]
    assert any(row["op"] in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear") for row in profile["ops"])
    assert 0 < sum(row["share_of_wall"] for row in profile["ops"]) <= 1.05


def test_bench_decode_times_this_tree_against_a_git_revision(trained_run, tmp_path):
    """--against REV: both sides decode the same sentences in processes of their own, alternating."""

    def benchmark_worktrees() -> list[str]:
        listing = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
        return [line for line in listing.splitlines() if "bench_decode_" in line]

    out = tmp_path / "decode.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_decode.py"), "--against", "HEAD", "--rounds", "2"]
    cmd += ["--checkpoint", str(trained_run), "--src", str(TOY / "test.en"), "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    sentences = len((TOY / "test.en").read_text().splitlines())
    for search in ("greedy", "beam5"):
        timing = result[search]
        assert len(timing["this_sentences_per_sec"]) == len(timing["HEAD_sentences_per_sec"]) == 2
        assert timing["speedup_median"] > 0 and timing["sentences"] == sentences
        assert 0 <= timing["same_best_translation"] <= sentences
        assert f"{search}: " in proc.stdout
    assert not benchmark_worktrees()  # the temporary checkout is removed


def test_bench_dropout_times_both_masks_on_the_toy_corpus(tmp_path):
    out = tmp_path / "dropout.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_dropout.py"), "--steps", "2", "--block", "1"]
    cmd += ["--warmup", "1", "--reps", "1", "--json", str(out), "--set", "data=toy", f"data.dir={TOY}"]
    cmd += [f"data.cache_dir={tmp_path / 'cache'}", "model=tiny", "train.threads=1", "train.max_tokens=256"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["activation_shape"] == [256, 128]  # max_tokens x model=tiny's ffn_dim
    assert set(result["mask_ms"]) == {"dropout_keep_scale", "rand_like"}
    assert result["mask_speedup"] == pytest.approx(
        result["mask_ms"]["rand_like"]["mask"] / result["mask_ms"]["dropout_keep_scale"]["mask"]
    )
    assert len(result["training_step_speedup_per_block"]) == 2


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [(3, 7), (21,)])  # [B,T,in] as the model calls its layers, and [N,in]
def test_openblas_linear_matches_nn_linear_forward_and_gradients(bias, rows):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    twin = bench_gemm.OpenBLASLinear(24, 40, bias=bias)
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(*rows, 24, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_(True)
    grad_out = torch.randn(40, *rows).movedim(0, -1)  # not contiguous, like gradients out of a permute
    y, y_twin = layer(x), twin(x_twin)
    assert type(y_twin.grad_fn).__name__ == "_OpenBLASLinearFnBackward"  # numpy's path, not a fallback
    assert y_twin.shape == (*rows, 40)
    torch.testing.assert_close(y_twin, y, rtol=1e-5, atol=1e-5)
    y.backward(grad_out)
    y_twin.backward(grad_out)
    torch.testing.assert_close(x_twin.grad, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(twin.weight.grad, layer.weight.grad, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(twin.bias.grad, layer.bias.grad, rtol=1e-5, atol=1e-5)


def test_openblas_linear_leaves_other_dtypes_and_autocast_to_torch():
    twin = bench_gemm.OpenBLASLinear(8, 4)
    x = torch.randn(5, 8)
    assert type(twin(x).grad_fn).__name__ == "_OpenBLASLinearFnBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 run is not raced against fp32 products
        assert twin(x).dtype == torch.bfloat16
    twin.double()
    assert type(twin(x.double()).grad_fn).__name__ != "_OpenBLASLinearFnBackward"


def test_set_linear_class_switches_every_layer_and_keeps_the_weights():
    model = Transformer(toy_model_config(), VOCAB, VOCAB)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = bench_gemm.set_linear_class(model, bench_gemm.OpenBLASLinear)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert n == len(linears) > 0 and all(type(m) is bench_gemm.OpenBLASLinear for m in linears)
    batch = fixed_batch()
    model.eval()
    with torch.no_grad():
        logits_numpy, _ = model(batch.src, batch.tgt_in)
        bench_gemm.set_linear_class(model, torch.nn.Linear)
        logits_torch, _ = model(batch.src, batch.tgt_in)
    assert all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(logits_numpy, logits_torch, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _bench_gemm_cmd(tmp_path, out) -> list[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_gemm.py"), "--steps", "2", "--block", "1"]
    cmd += ["--warmup", "1", "--reps", "1", "--json", str(out), "--set", "data=toy", f"data.dir={TOY}"]
    return cmd + [f"data.cache_dir={tmp_path / 'cache'}", "model=tiny", "train.threads=1", "train.max_tokens=256"]


def test_bench_gemm_times_both_backends_on_the_toy_corpus(tmp_path):
    out = tmp_path / "gemm.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        _bench_gemm_cmd(tmp_path, out), cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["threads"] == result["openblas_threads"] == 1
    layers = {row["layer"] for row in result["gemm"]}
    assert {"64->192", "64->128", "128->64"} <= layers  # model=tiny: qkv, FFN up and down
    assert len(result["gemm"]) == 3 * len(layers)  # forward and two backward products per layer shape
    for row in result["gemm"]:  # [M,K,N] of each product at rows = max_tokens
        d_in, d_out = map(int, row["layer"].split("->"))
        expected = {"forward x@W.T": [256, d_in, d_out], "backward grad@W": [256, d_out, d_in]}
        assert row["shape"] == expected.get(row["product"], [d_out, 256, d_in])
        assert all(value > 0 for value in row["gflops"].values())
    assert set(result["tokens_per_sec"]) == {"torch", "numpy"}
    assert len(result["training_step_speedup_per_block"]) == 2
    assert all(np.isfinite(v) for v in result["mean_block_loss"].values())


def test_bench_gemm_refuses_unequal_thread_counts_in_one_line(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    proc = subprocess.run(
        _bench_gemm_cmd(tmp_path, tmp_path / "gemm.json"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("bench_gemm: error: torch runs 1 threads and OpenBLAS")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", ["bench_decode.py", "bench_ct2.py"])
@pytest.mark.parametrize("given", [[], ["--checkpoint", "no/such/run"]])
def test_decoding_benchmarks_without_a_model_say_so_in_one_line(tmp_path, script, given):
    # run where there is no outputs/ folder: `make bench` before `make train` lands here
    cmd = [sys.executable, str(ROOT / "scripts" / script), *given]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
    assert proc.stderr.startswith(script.removesuffix(".py") + ": error: ")
