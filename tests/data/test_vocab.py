import numpy as np
import pytest

from recfunnel.data import Vocabulary
from recfunnel.errors import DataError, UnknownIdError


def test_ids_map_to_dense_indices_and_unknown_to_the_oov_bucket():
    vocab = Vocabulary(["a", "b", 7])
    assert len(vocab) == 3
    assert vocab.oov_index == 3
    assert vocab.index("b") == 1
    assert vocab.index(7) == 2  # ids are strings: 7 and "7" are the same
    np.testing.assert_array_equal(vocab.encode(["a", "zzz", "7"]), [0, 3, 2])
    assert vocab.decode([2, 0, 3]) == ["7", "a", "[UNK]"]


def test_unknown_id_raises_a_named_error_on_request():
    vocab = Vocabulary(["a"], name="user")
    with pytest.raises(UnknownIdError, match="unknown user 'x'"):
        vocab.index("x")
    with pytest.raises(UnknownIdError):
        vocab.encode(["a", "x"], unknown="raise")


def test_repeated_ids_are_rejected_and_from_values_dedupes():
    with pytest.raises(DataError, match="twice"):
        Vocabulary(["a", "a"])
    assert Vocabulary.from_values(["b", "a", "b"]).ids == ["b", "a"]


def test_round_trip_through_dict():
    vocab = Vocabulary(["x", "y"], name="item")
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab


def test_a_vocabulary_of_distinct_integers_reads_as_strings_when_asked():
    vocab = Vocabulary.from_distinct(np.array([30, 10, 20]), name="item")
    assert len(vocab) == 3 and vocab.oov_index == 3
    assert repr(vocab) == "Vocabulary(item, n=3: ['30', '10', '20'])"
    assert vocab._list is None  # nothing made per id yet
    assert vocab.index("20") == 2 and vocab.index(10) == 1 and "30" in vocab
    np.testing.assert_array_equal(vocab.encode(["10", "99"]), [1, 3])
    assert vocab.decode([0, 3]) == ["30", "[UNK]"]
    assert vocab == Vocabulary(["30", "10", "20"])
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab
