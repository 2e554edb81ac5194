"""Prefix-aware routing: a conversation's next turn goes to the server that answered its previous one, whose
prefix cache holds its history, unless that server is overloaded.

A chat client resends the whole history every turn, so turn `k+1`'s messages start with turn `k`'s. Each request
is keyed by a chained hash of its messages (`h_i = hash(h_{i-1}, message i)`, the model name first); the server
that took a request is remembered under the hash of all its messages. A new request looks its chain up from
the longest prefix down and prefers the server that holds the longest one, when that server has no more than
`slack` requests in flight above the least loaded one; otherwise (or with no match) the least loaded server
takes it, as before. Only a request that extends an earlier one (a conversation coming back) is steered: the
same messages sent again are balanced like any new request. The gateway sees messages, not tokens: equal
messages render to equal prompts.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

MAX_CONVERSATIONS = 100_000  # remembered request keys (~100 bytes each); the oldest are forgotten
AFFINITY_SLACK = 2  # requests in flight a preferred server may have above the least loaded one


class Balanced(Protocol):
    base_url: str
    num_in_flight: int


Server = TypeVar("Server", bound=Balanced)


def conversation_keys(body: dict[str, Any]) -> list[str]:
    """The chained hash of each prefix of the request's messages, shortest first; [] without messages."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    chain = hashlib.blake2b(str(body.get("model", "")).encode(), digest_size=16)
    keys = []
    for message in messages:
        chain = chain.copy()
        chain.update(json.dumps(message, sort_keys=True, separators=(",", ":"), default=str).encode())
        keys.append(chain.hexdigest())
    return keys


class PrefixAffinity:
    """Which server last answered each conversation prefix (least recently used forgotten first)."""

    def __init__(self, max_conversations: int = MAX_CONVERSATIONS, slack: int = AFFINITY_SLACK) -> None:
        self.max_conversations = max_conversations
        self.slack = slack
        self._servers: OrderedDict[str, str] = OrderedDict()

    def preferred(self, keys: Sequence[str]) -> str | None:
        """The server that answered the longest strict prefix of these messages, or None."""
        for key in reversed(keys[:-1]):
            url = self._servers.get(key)
            if url is not None:
                self._servers.move_to_end(key)
                return url
        return None

    def record(self, keys: Sequence[str], base_url: str) -> None:
        """`base_url` took the request with these messages (its whole history is now cached there)."""
        if not keys:
            return
        self._servers[keys[-1]] = base_url
        self._servers.move_to_end(keys[-1])
        while len(self._servers) > self.max_conversations:
            self._servers.popitem(last=False)

    def choose(self, candidates: Sequence[Server], least_loaded: Server, preferred: str | None) -> Server:
        """The preferred server among `candidates` unless it is overloaded, else the least loaded one."""
        for server in candidates:
            if server.base_url == preferred and server.num_in_flight <= least_loaded.num_in_flight + self.slack:
                return server
        return least_loaded
