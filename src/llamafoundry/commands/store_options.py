"""The options every command that keeps state shares (--data-dir, --database-url, --create, --config), resolved
through `llamafoundry.settings`, and the one rule for the data directory all of them follow."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from llamafoundry.settings import (
    CONFIG_ENV,
    LEGACY_ENV,
    Resolved,
    StoreOptions,
    config_file,
    default_config_file,
    default_data_dir,
    env_name,
    resolve,
)

S = TypeVar("S", bound=StoreOptions)


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --database-url, --create and --config. Their defaults are left out of the namespace (SUPPRESS),
    so that a flag given can be told from one not given: the settings decide what is not given."""
    parser.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="data directory: deployments, keys, "
                        f"usage, downloaded models, logs (${env_name('data_dir')} or ${LEGACY_ENV['data_dir']}; "
                        f"default {default_data_dir()}, made on first use). One given that does not exist is "
                        "refused, unless --create")  # fmt: skip
    parser.add_argument("--create", action="store_true", default=argparse.SUPPRESS, help="make the --data-dir if it "
                        "does not exist")  # fmt: skip
    parser.add_argument("--database-url", default=argparse.SUPPRESS, help="postgresql://... to keep state in "
                        f"PostgreSQL (${env_name('database_url')}; default: SQLite in the data directory)")  # fmt: skip
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help="TOML file of "
                        f"settings, below flags and LLAMAFOUNDRY_* variables (${CONFIG_ENV}; default "
                        f"{default_config_file()} when it exists)")  # fmt: skip


def settings_of(cls: type[S], args: argparse.Namespace, *, env_only: frozenset[str] | None = None,
                with_file: bool = True) -> Resolved[S]:  # fmt: skip
    """`cls` resolved from the flags in `args` (those given), the environment and the config file."""
    flags = {name: getattr(args, name) for name in cls.model_fields if hasattr(args, name)}
    path, origin = config_file(getattr(args, "config", None)) if with_file else (None, None)
    return resolve(cls, flags, path, origin, env_only=env_only)


def data_home(resolved: Resolved[Any]) -> Path:
    """The data directory. The default location is made when missing (a fresh machine); one that is set (flag,
    environment, config file) must exist, unless `create` is set: a typo must not start an empty store.

    Raises:
        ValueError: a sentence naming the setting and what to do.
    """
    options: StoreOptions = resolved.values
    if options.data_dir is None:
        home = default_data_dir()
        home.mkdir(parents=True, exist_ok=True)
        return home
    home = options.data_dir.expanduser()
    where = resolved.describe("data_dir")
    if home.is_dir():
        return home
    if home.exists():
        raise ValueError(f"{where}: that is a file, not a data directory. Give a directory.")
    if not options.create:
        raise ValueError(f"There is no data directory at {home} ({where}). Check the path, or pass --create to "
                         "start a new data directory there.")  # fmt: skip
    home.mkdir(parents=True)
    return home


@contextmanager
def open_store(args: argparse.Namespace) -> Iterator[Any]:
    """The store of the command's data directory (or --database-url), closed on exit."""
    from llamafoundry.platform.store import Store

    resolved = settings_of(StoreOptions, args)
    store = Store.open(data_home(resolved), resolved.values.database_url)
    try:
        yield store
    finally:
        store.close()


def home_of(args: argparse.Namespace) -> Path:
    """The command's data directory (checked as `data_home` checks it)."""
    return data_home(settings_of(StoreOptions, args))
