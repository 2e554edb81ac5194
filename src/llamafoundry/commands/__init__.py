"""Subcommands of the CLI: each module has `register(subparsers)`, called by cli.build_parser()."""
