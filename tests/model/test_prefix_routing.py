"""Prefix-aware routing on its own: conversation keys, the server holding the longest history, and the fallback
to the least loaded server when that one is overloaded."""

from __future__ import annotations

from dataclasses import dataclass

from llamafoundry.model.prefix_routing import PrefixAffinity, conversation_keys


@dataclass
class Server:
    base_url: str
    num_in_flight: int = 0


def body(*texts: str) -> dict[str, object]:
    roles = ["user", "assistant"]
    return {"model": "m", "messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]}


def test_a_turn_extends_the_keys_of_the_turns_before_it() -> None:
    turn_1, turn_2 = conversation_keys(body("hi")), conversation_keys(body("hi", "hello", "more"))
    assert turn_2[:1] == turn_1 and len(turn_2) == 3
    assert conversation_keys(body("hi!"))[0] != turn_1[0]
    assert conversation_keys({"model": "other", **{"messages": body("hi")["messages"]}})[0] != turn_1[0]
    assert conversation_keys({"prompt": "text"}) == []


def test_a_returning_conversation_goes_where_its_longest_history_was_answered() -> None:
    affinity = PrefixAffinity()
    a, b = Server("a"), Server("b")
    affinity.record(conversation_keys(body("hi")), "a")
    affinity.record(conversation_keys(body("hi", "hello", "more")), "b")
    assert affinity.preferred(conversation_keys(body("hi", "hello", "more", "ok", "again"))) == "b"
    assert affinity.preferred(conversation_keys(body("hi", "hello", "else"))) == "a"
    assert affinity.preferred(conversation_keys(body("hi"))) is None  # the same request again: balanced
    assert affinity.preferred(conversation_keys(body("new"))) is None
    assert affinity.choose([a, b], a, "b") is b


def test_an_overloaded_server_gives_the_turn_to_the_least_loaded() -> None:
    affinity = PrefixAffinity(slack=2)
    busy, idle = Server("busy", 3), Server("idle", 0)
    assert affinity.choose([busy, idle], idle, "busy") is idle
    busy.num_in_flight = 2
    assert affinity.choose([busy, idle], idle, "busy") is busy
    assert affinity.choose([idle], idle, "busy") is idle  # the preferred server is not a candidate (it failed)


def test_the_oldest_conversations_are_forgotten() -> None:
    affinity = PrefixAffinity(max_conversations=2)
    for name in ("one", "two", "three"):
        affinity.record(conversation_keys(body(name)), name)
    assert affinity.preferred(conversation_keys(body("one", "x", "y"))) is None
    assert affinity.preferred(conversation_keys(body("three", "x", "y"))) == "three"
