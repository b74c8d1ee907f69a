import pytest

from mt.config import DataConfig
from mt.errors import UserError
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, words_of_pieces

from .conftest import TOY

LINES_EN = (TOY / "train.en").read_text().splitlines()
LINES_DE = (TOY / "train.de").read_text().splitlines()


@pytest.fixture(scope="module")
def joint():
    return Tokenizer.train(LINES_EN, LINES_DE, DataConfig(name="toy", vocab_size=64))


def test_special_ids_are_fixed(joint):
    sp = joint.src
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)


def test_round_trip_detokenizes_to_raw_text(joint):
    lines = ["Heute läuft der hund im park .", "Now the cat sits at the beach ."]
    assert joint.decode_tgt(joint.encode_tgt(lines)) == lines
    ids = joint.encode_tgt(lines[:1])[0]
    assert joint.decode_tgt([[BOS_ID, *ids, EOS_ID, PAD_ID]]) == lines[:1]  # specials dropped


def test_save_load_and_separate_vocabularies(tmp_path, joint):
    joint.save(tmp_path / "j")
    again = Tokenizer.load(tmp_path / "j")
    assert again.joint and again.encode_src(["the dog"]) == joint.encode_src(["the dog"])
    separate = Tokenizer.train(LINES_EN, LINES_DE, DataConfig(name="toy", vocab_size=40, joint_vocab=False))
    assert not separate.joint and separate.src_vocab_size == separate.tgt_vocab_size == 40
    separate.save(tmp_path / "s")
    assert Tokenizer.load(tmp_path / "s").tgt_proto == separate.tgt_proto
    assert Tokenizer.load(tmp_path / "missing") is None
    # A directory reused for the other layout loads what was saved last, not the old files.
    separate.save(tmp_path / "j")
    assert not Tokenizer.load(tmp_path / "j").joint
    joint.save(tmp_path / "s")
    assert Tokenizer.load(tmp_path / "s").joint


def test_vocab_larger_than_corpus_allows_is_a_user_error():
    with pytest.raises(UserError, match="data.vocab_size=5000 is too large"):
        Tokenizer.train(LINES_EN[:20], LINES_DE[:20], DataConfig(name="toy", vocab_size=5000))


def test_words_of_pieces():
    assert words_of_pieces(["▁ice", "▁cre", "am", "▁."]) == [0, 1, 1, 2]
    assert words_of_pieces(["ab", "▁c", "▁", "(", "d"]) == [0, 1, 2, 2, 2]
    assert words_of_pieces([]) == []
