"""The shared argument checks: one message shape, bool never an integer, a wrong type is both errors."""
import numpy as np
import pytest

from retina_fgvis.checks import ArgumentTypeError, check_int, check_number, is_integer


def test_integers_pass_and_bool_does_not():
    assert check_int("n", 3, minimum=1) == 3 and check_int("n", np.int64(4)) == 4
    assert check_int("n", None, allow_none=True) is None
    assert is_integer(np.int32(1)) and not is_integer(True) and not is_integer(1.0)


@pytest.mark.parametrize("value, error, words", [
    (True, ArgumentTypeError, "n: expected an integer >= 1"),
    (2.5, ArgumentTypeError, "n: expected an integer >= 1"),
    ("3", ArgumentTypeError, "n: expected an integer >= 1"),
    (0, ValueError, "n: expected an integer >= 1, got 0"),
])
def test_bad_integers_name_the_argument(value, error, words):
    with pytest.raises(error, match=words):
        check_int("n", value, minimum=1)


def test_a_wrong_type_is_a_type_error_and_a_value_error():
    for caught in (TypeError, ValueError):
        with pytest.raises(caught):
            check_int("n", 1.5)


def test_bounds_are_inclusive_unless_exclusive():
    assert check_int("k", 4, minimum=1, maximum=4) == 4
    with pytest.raises(ValueError, match=r"k: expected an integer in \[1, 4\], got 5"):
        check_int("k", 5, minimum=1, maximum=4)
    assert check_number("lr", 0.5, minimum=0, exclusive_minimum=True) == 0.5
    for bad in (0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
            check_number("lr", bad, minimum=0, exclusive_minimum=True)
    with pytest.raises(ArgumentTypeError, match="lr: expected a number"):
        check_number("lr", "fast")
