"""CLI command modules: each imports ``bench.cli.app`` and adds its commands (loaded by ``bench.cli``)."""
