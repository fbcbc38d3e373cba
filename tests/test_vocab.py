"""The vocabulary: ids of the sorted characters, errors that name unknown ones, the byte vocabulary, the id dtype."""

import numpy as np
import pytest

from charrnn.errors import UserError
from charrnn.vocab import Vocab, dtype_for


def test_encode_gives_each_character_its_index_and_decode_inverts_it():
    vocab = Vocab("\n abc")
    assert vocab.size == 5
    assert vocab.encode("cab \n") == [4, 2, 3, 1, 0]
    assert vocab.decode([4, 2, 3, 1, 0]) == "cab \n"
    assert vocab.encode("") == []


def test_prime_outside_vocabulary_names_the_characters():
    with pytest.raises(UserError, match=r"2 character\(s\) not in the model's vocabulary: 'x', 'z'"):
        Vocab("ab").encode("axbz")


def test_more_than_ten_unknown_characters_are_counted_and_the_first_ten_shown():
    with pytest.raises(UserError) as e:
        Vocab("a").encode("a" + "bcdefghijklm")
    message = str(e.value)
    assert message.startswith("12 character(s) not in the model's vocabulary: 'b', 'c'")
    assert "'k'" in message
    assert "'l'" not in message
    assert message.endswith(" ...")


@pytest.mark.parametrize("size, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16),
                                         (65537, np.uint32)])
def test_ids_take_the_smallest_unsigned_dtype_that_holds_them(size, dtype):
    assert dtype_for(size) == np.dtype(dtype)


def test_the_vocabulary_dtype_follows_its_size():
    assert Vocab("abc").dtype == np.uint8
    assert Vocab("".join(map(chr, range(300)))).dtype == np.uint16


def test_the_byte_vocabulary_is_every_byte_value_and_writes_raw_bytes():
    vocab = Vocab.bytes()
    assert vocab.size == 256
    assert vocab.byte_level
    assert vocab.encode("\x00\xff") == [0, 255]
    assert vocab.to_bytes(vocab.decode([0, 200, 255])) == bytes([0, 200, 255])


def test_a_text_vocabulary_writes_utf8():
    assert Vocab("é€").to_bytes("€é") == "€é".encode()
    assert not Vocab("é€").byte_level
