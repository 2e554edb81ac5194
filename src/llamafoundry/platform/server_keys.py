"""A deployment key never equals a server's own `--api-key` (one key would then open both).

The gateway knows its own key; the `deploy` commands work on the store with or without a server. So each
server records the hash of its key in the store while it runs (at start-up, refreshed with its runtime
heartbeat, removed when it stops), and:

- `deploy keys --regenerate --value` and the management API's `keys/regenerate` refuse (409) a value whose
  hash a running server recorded (`server_key_holder`), as they refuse another deployment's key or the admin key;
- `serve` refuses to start when its `--api-key` is a deployment's key or the admin key (`check_own_key`);
- a server that still finds a deployment key equal to its own (set while it was down, or in a race with a
  command) does not accept that key for the deployment, says so in the log and the deployment's status, and
  keeps serving the deployment's other key (`Gateway`).

A row of a server that stopped without saying so (killed) is dropped once it is older than `STALE_S`: the
start-up check covers that server when it comes back.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from llamafoundry.platform.store import Store, metadata

STALE_S = 600.0  # 40 missed heartbeats of a running server (gateway.RUNTIME_HEARTBEAT_S)

server_keys = sa.Table(
    "server_keys",
    metadata,
    sa.Column("server", sa.String(255), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


def record_server_key(store: Store, server: str, key_hash: str, now: float | None = None) -> None:
    """Record (or refresh) `server`'s own key hash; drop the rows of servers gone quiet for STALE_S."""
    now = time.time() if now is None else now
    with store.engine.begin() as conn:  # no revision bump: servers do not reload on it
        conn.execute(server_keys.delete().where(server_keys.c.updated_at < now - STALE_S))
        conn.execute(server_keys.delete().where(server_keys.c.server == server))
        conn.execute(server_keys.insert().values(server=server, key_hash=key_hash, updated_at=now))


def forget_server_key(store: Store, server: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(server_keys.delete().where(server_keys.c.server == server))


def server_key_holder(store: Store, key_hash: str, now: float | None = None) -> str | None:
    """`the --api-key of the server HOST pid N` when a running server's own key has this hash, else None."""
    now = time.time() if now is None else now
    query = sa.select(server_keys.c.server).where(
        (server_keys.c.key_hash == key_hash) & (server_keys.c.updated_at >= now - STALE_S)
    )
    with store.engine.connect() as conn:
        server = conn.execute(query).scalar()
    return f"the --api-key of the server {server}" if server is not None else None


def check_own_key(store: Store, key_hash: str) -> None:
    """Raise ValueError (the CLI prints it) when a server's own key is a deployment's key or the admin key."""
    holder = store.key_holder(key_hash)
    if holder is not None:
        raise ValueError(
            f"--api-key is already in use ({holder}): one key would open both this server's own model and that. "
            "Start the server with another --api-key (or none: one is generated), or regenerate that key with "
            "`llamafoundry deploy keys NAME --regenerate primary|secondary` (`deploy admin-key --regenerate` for the "
            "admin key)."
        )
