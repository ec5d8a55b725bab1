"""The operator-building test helpers moved from kaito_operator.testing to kaito.testing: the old names
say where they went instead of failing with a bare ImportError or AttributeError."""

from __future__ import annotations

import pytest

from kaito_operator import testing as generic


def test_the_old_names_point_to_kaito_testing() -> None:
    with pytest.raises(ImportError, match=r"from kaito\.testing import running_operator"):
        generic.running_operator(object())
    with pytest.raises(ImportError, match=r"from kaito\.testing import operator_settings"):
        generic.operator_settings(qps=0)


def test_the_new_home_has_them() -> None:
    from kaito import testing

    assert testing.operator_settings(qps=0).qps == 0
    assert callable(testing.running_operator)
