import gzip

import datasets
import numpy as np
import pytest

from mt.batching import bucket_batches, padding_waste
from mt.config import DataConfig
from mt.data import load_hub_split, load_raw, prepare, read_iwslt_tags, read_iwslt_xml
from mt.errors import UserError

from .conftest import TOY


def write(path, lines, gz=False):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)


def text_corpus(tmp_path, n=20, gz=True):
    suffix = ".gz" if gz else ""
    for split, count in (("train", n), ("val", 3), ("test", 3)):
        write(tmp_path / f"{split}.en{suffix}", [f"sentence {i} in english" for i in range(count)], gz)
        write(tmp_path / f"{split}.de{suffix}", [f"satz {i} auf deutsch" for i in range(count)], gz)
    return DataConfig(
        name="mine",
        dir=str(tmp_path),
        train=["train"],
        valid=["val"],
        test=["test"],
        vocab_size=30,
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.mark.parametrize("gz", [True, False])
def test_text_loader_reads_gzip_and_plain(tmp_path, gz):
    raw = load_raw(text_corpus(tmp_path, gz=gz))
    assert raw["train"].num_rows == 20 and raw["valid"].num_rows == 3
    assert raw["train"][2] == {"src": "sentence 2 in english", "tgt": "satz 2 auf deutsch"}


def test_mismatched_line_counts_name_both_files(tmp_path):
    cfg = text_corpus(tmp_path)
    write(tmp_path / "train.de.gz", ["only one line"], gz=True)
    with pytest.raises(UserError, match=r"train\.en\.gz has 20 lines.*train\.de\.gz has 1"):
        load_raw(cfg)


def test_invalid_utf8_names_file_and_line(tmp_path):
    cfg = text_corpus(tmp_path, gz=False)
    (tmp_path / "val.de").write_bytes(b"gut\nkaputt \xff\xfe\nok\n")
    with pytest.raises(UserError, match=r"val\.de: line 2 is not valid UTF-8"):
        load_raw(cfg)


def test_missing_language_lists_available(tmp_path):
    cfg = text_corpus(tmp_path)
    cfg.src_lang = "fr"
    with pytest.raises(UserError, match=r"no 'fr' side.*languages there: de, en"):
        load_raw(cfg)


def test_missing_directory(tmp_path):
    cfg = text_corpus(tmp_path)
    cfg.dir = str(tmp_path / "nope")
    with pytest.raises(UserError, match="data directory not found"):
        load_raw(cfg)


IWSLT = """<?xml version="1.0" encoding="UTF-8"?>
<mteval><refset setid="x" srclang="german" trglang="english" refid="ref">
<doc docid="7" genre="lectures"><url>u</url><title>t</title>
<seg id="1"> {a} </seg>
<seg id="2"> {b} </seg>
</doc></refset></mteval>
"""


def test_iwslt_xml_pairs_segments(tmp_path):
    (tmp_path / "IWSLT16.TED.tst2010.de-en.de.xml").write_text(IWSLT.format(a="Hallo &amp; Welt", b="Zwei"))
    (tmp_path / "IWSLT16.TED.tst2010.de-en.en.xml").write_text(IWSLT.format(a="Hello &amp; world", b="Two"))
    assert read_iwslt_xml(tmp_path / "IWSLT16.TED.tst2010.de-en.en.xml") == [("7:1", "Hello & world"), ("7:2", "Two")]
    cfg = DataConfig(
        name="iw",
        format="iwslt_xml",
        dir=str(tmp_path),
        src_lang="de",
        tgt_lang="en",
        train=["TED.tst2010"],
        valid=["TED.tst2010"],
        test=["TED.tst2010"],
    )
    raw = load_raw(cfg)
    assert raw["train"]["src"] == ["Hallo & Welt", "Zwei"] and raw["train"]["tgt"] == ["Hello & world", "Two"]


TAGS = """<url>http://www.ted.com/talks/a</url>
<keywords>talks, science</keywords>
<speaker>A Speaker</speaker>
<talkid>1</talkid>
<title>{title}</title>
<description>{description}</description>
{a}
{b}
<reviewer href="x">R</reviewer>
<translator href="y">T</translator>
"""


def test_iwslt_train_tags_are_the_release_training_talks(tmp_path):
    de = TAGS.format(title="Ein Titel", description="Eine Beschreibung", a="Hallo Welt.", b="Zwei & drei.")
    en = TAGS.format(title="A title", description="A description", a="Hello world.", b="Two & three.")
    (tmp_path / "train.tags.de-en.de").write_text(de, encoding="utf-8")
    (tmp_path / "train.tags.de-en.en").write_text(en, encoding="utf-8")
    assert read_iwslt_tags(tmp_path / "train.tags.de-en.en") == [
        "A title",
        "A description",
        "Hello world.",
        "Two & three.",
    ]
    (tmp_path / "IWSLT17.TED.dev2010.de-en.de.xml").write_text(IWSLT.format(a="Eins", b="Zwei"))
    (tmp_path / "IWSLT17.TED.dev2010.de-en.en.xml").write_text(IWSLT.format(a="One", b="Two"))
    cfg = DataConfig(
        name="iw", format="iwslt_xml", dir=str(tmp_path), src_lang="en", tgt_lang="de",
        train=["train"], valid=["TED.dev2010"], test=["TED.dev2010"],
    )  # fmt: skip
    raw = load_raw(cfg)
    assert raw["train"]["src"] == ["A title", "A description", "Hello world.", "Two & three."]
    assert raw["train"]["tgt"] == ["Ein Titel", "Eine Beschreibung", "Hallo Welt.", "Zwei & drei."]
    assert raw["valid"]["src"] == ["One", "Two"]
    (tmp_path / "train.tags.de-en.de").write_text(de + "Eine Zeile mehr.\n", encoding="utf-8")
    with pytest.raises(UserError, match="train.tags.de-en.en"):
        load_raw(cfg)
    (tmp_path / "train.tags.de-en.de").unlink()
    with pytest.raises(UserError, match=r"no train.tags.\*.de in .*full IWSLT release"):
        load_raw(cfg)


def test_a_hub_dataset_datasets_refuses_gives_one_line(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found iwslt2017.py")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    cfg = DataConfig(name="h", format="hf_hub", hf_name="iwslt2017", hf_config="iwslt2017-de-en", src_lang="de")
    with pytest.raises(UserError, match=r"no longer supported.*data=iwslt16 data.dir=DIR 'data.train=\[train\]'"):
        load_hub_split(cfg, "train")


def test_prepare_filters_empty_and_long_training_pairs(tmp_path):
    cfg = text_corpus(tmp_path, gz=False)
    write(tmp_path / "train.en", ["a short one", "", "word " * 60, "another one"])
    write(tmp_path / "train.de", ["ein kurzer", "leer", "wort " * 60, "noch einer"])
    cfg.max_len = 20
    cfg.vocab_size = 25
    data = prepare(cfg)
    rep = data.reports["train"]
    assert (rep.kept, rep.empty, rep.too_long) == (2, 1, 1)
    assert data.splits["train"].src_text == ["a short one", "another one"]


def test_bucket_batches_respect_budget_and_are_deterministic():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 60, 2000), rng.integers(1, 60, 2000)
    a = bucket_batches(src, tgt, 500, seed=7, epoch=3)
    b = bucket_batches(src, tgt, 500, seed=7, epoch=3)
    c = bucket_batches(src, tgt, 500, seed=7, epoch=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    for batch in a:
        assert len(batch) * max(src[batch].max(), tgt[batch].max()) <= 500
    assert sorted(np.concatenate(a).tolist()) == list(range(2000))  # every sentence exactly once
    assert padding_waste(a, src, tgt) < 0.35  # bucketing: far below random batching
    shuffled = [rng.permutation(2000)[i : i + len(x)] for i, x in enumerate(a)]
    assert padding_waste(shuffled, src, tgt) > padding_waste(a, src, tgt)


def test_toy_fixture_is_parallel():
    for split in ("train", "valid", "test"):
        en = (TOY / f"{split}.en").read_text().splitlines()
        de = (TOY / f"{split}.de").read_text().splitlines()
        assert len(en) == len(de) > 0


def test_token_column_reads_rows_slices_and_selections_without_copying():
    import pyarrow as pa

    from mt.data import TokenColumn

    seqs = [[5, 6], [], [7], [8, 9, 10], [11]]
    two_chunks = pa.chunked_array(
        [pa.array(seqs[:2], type=pa.list_(pa.int32())), pa.array(seqs[2:], type=pa.list_(pa.int32()))]
    )
    for col in (TokenColumn.from_lists(seqs), TokenColumn.from_arrow(two_chunks)):
        assert len(col) == 5 and list(col) == seqs and col[-1] == [11]
        assert col.lengths().tolist() == [2, 0, 1, 3, 1]
        assert list(col[1:4]) == seqs[1:4] and col[1:4].lengths().tolist() == [0, 1, 3]
        picked = TokenColumn.from_arrow(two_chunks, rows=np.array([3, 0]))
        assert list(picked) == [[8, 9, 10], [5, 6]] and picked.lengths().tolist() == [3, 2]
        with pytest.raises(IndexError):
            col[5]


def test_token_ids_are_cached_as_arrow_and_reused(tmp_path):
    from mt.data import encoded_cache_file, load_raw

    cfg = text_corpus(tmp_path)
    assert load_raw(cfg)["train"].cache_files, "text splits are streamed into an Arrow file, not held in lists"
    first = prepare(cfg)
    cache_files = sorted((tmp_path / "cache" / "encoded").glob("*.arrow"))
    assert len(cache_files) == 3  # train, valid, test
    stamps = [f.stat().st_mtime_ns for f in cache_files]
    second = prepare(cfg)
    assert [f.stat().st_mtime_ns for f in cache_files] == stamps  # read, not rewritten
    for name in ("train", "valid", "test"):
        assert list(second.splits[name].src) == list(first.splits[name].src)
        assert list(second.splits[name].tgt) == list(first.splits[name].tgt)
    # An edited corpus is a new cache entry, never a stale hit.
    write(tmp_path / "train.en.gz", [f"changed sentence {i}" for i in range(20)], gz=True)
    raw = load_raw(cfg)
    assert encoded_cache_file(cfg, raw["train"], first.tokenizer, "train") not in cache_files


def test_parallel_tokenization_matches_one_process(tmp_path):
    cfg = text_corpus(tmp_path, n=60)
    one = prepare(cfg)
    cfg.num_proc, cfg.cache_dir = 2, str(tmp_path / "cache2")
    two = prepare(cfg, one.tokenizer)
    assert list(two.splits["train"].src) == list(one.splits["train"].src)
    assert list(two.splits["train"].tgt) == list(one.splits["train"].tgt)


def test_tokenizer_trains_on_a_sample_of_a_large_split(tmp_path, monkeypatch):
    import mt.data

    seen = []
    real_train = mt.data.Tokenizer.train
    monkeypatch.setattr(
        mt.data.Tokenizer, "train", lambda src, tgt, c: seen.append(len(src)) or real_train(src, tgt, c)
    )
    cfg = text_corpus(tmp_path, n=250)
    cfg.spm_input_sentence_size = 120  # fewer than the 250 training pairs: only a sample is read
    data = prepare(cfg)
    assert seen == [120]
    assert data.tokenizer.src_vocab_size == 30 and len(data.splits["train"]) == 250  # training uses every pair
