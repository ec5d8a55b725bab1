"""Machine names: deterministic, distinct, valid AKS agent-pool names."""

from __future__ import annotations

from kaito_operator.workspace.names import AGENT_POOL_NAME, machine_name, machine_names


def test_names_are_a_pure_function_of_uid_and_index() -> None:
    assert machine_name("uid-a", 0) == machine_name("uid-a", 0)
    assert machine_name("uid-a", 0) != machine_name("uid-a", 1)
    assert machine_name("uid-a", 0) != machine_name("uid-b", 0)


def test_names_are_ws_plus_nine_hex_and_valid_agent_pool_names() -> None:
    for index in range(200):
        name = machine_name(f"uid-{index}", index)
        assert len(name) == 11
        assert name.startswith("ws")
        int(name[2:], 16)
        assert AGENT_POOL_NAME.match(name)


def test_known_value() -> None:
    # sha256("uid-a/0") starts with these digits; a change here renames every Machine in the field.
    import hashlib

    assert machine_name("uid-a", 0) == "ws" + hashlib.sha256(b"uid-a/0").hexdigest()[:9]


def test_taken_names_are_skipped_lowest_index_first() -> None:
    all_three = machine_names("u", 3)
    assert machine_names("u", 2, taken={all_three[0]}) == all_three[1:]
    assert machine_names("u", 1, taken=set(all_three[:2])) == [all_three[2]]
    assert machine_names("u", 0) == []
