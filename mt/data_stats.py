"""`python -m mt.data`: prepare a corpus as training would and print its statistics."""

from __future__ import annotations

import sys

from mt.batching import bucket_batches, padding_waste
from mt.config import DataConfig
from mt.data import PreparedData, prepare
from mt.paths import CONFIG_DIR


def describe(data: PreparedData, cfg: DataConfig) -> str:
    width = max(6, *map(len, data.splits))  # split names: train, valid, test; with data.corpora NAME.valid
    rows = [
        f"corpus {cfg.name} {cfg.src_lang}->{cfg.tgt_lang}  vocab src {data.tokenizer.src_vocab_size} "
        f"tgt {data.tokenizer.tgt_vocab_size} (joint={data.tokenizer.joint})",
        f"{'split':<{width}} {'pairs':>8} {'src words':>10} {'tgt words':>10} {'src toks':>9} {'tgt toks':>9} "
        f"{'empty':>6} {'too long':>8}",
    ]
    for name, split in data.splits.items():
        rep = data.reports[name]
        rows.append(
            f"{name:<{width}} {len(split):>8} {sum(len(s.split()) for s in split.src_text):>10} "
            f"{sum(len(t.split()) for t in split.tgt_text):>10} {sum(map(len, split.src)):>9} "
            f"{sum(map(len, split.tgt)):>9} {rep.empty:>6} {rep.too_long:>8}"
        )
    return "\n".join(rows)


DATA_HELP = """python -m mt.data [data=OPTION] [data.KEY=VALUE ...] [train.max_tokens=N]

Prepare a corpus as training would (load, train or reuse the sentencepiece model, tokenize into
the Arrow cache under data/cache) and print its statistics: pairs, words and tokens per split,
pairs dropped as empty or too long, and the batches of one epoch with their padding waste.

Examples:
  python -m mt.data                                  # Multi30k en->de
  python -m mt.data data=iwslt16 data.vocab_size=16000
"""


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    from mt.cli import hydra_entry

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def run(cfg: DictConfig) -> None:
        from mt.config import to_dataclass
        from mt.errors import exit_on_user_error

        with exit_on_user_error("mt.data"):
            conf = to_dataclass(cfg)
            data = prepare(conf.data)
            print(describe(data, conf.data))
            src_lens, tgt_lens = data.splits["train"].lengths()
            batches = bucket_batches(src_lens, tgt_lens, conf.train.max_tokens, seed=conf.train.seed)
            print(
                f"train batches at max_tokens={conf.train.max_tokens}: {len(batches)}, "
                f"padding waste {padding_waste(batches, src_lens, tgt_lens):.1%}"
            )

    # Statistics only: no run directory, no log files.
    # (configs/config.yaml sets job_logging itself: its file handler is dropped here, or it writes data_stats.log.)
    quiet = [
        "hydra.run.dir=.",
        "hydra.output_subdir=null",
        "hydra/hydra_logging=none",
        "hydra.job_logging.root.handlers=[console]",
        "~hydra.job_logging.handlers.file",
    ]
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):  # Hydra's page would describe mt.train
        print(DATA_HELP, end="")
        return
    hydra_entry(run, "mt.data", overrides_extra=quiet)
