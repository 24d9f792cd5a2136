"""`gateway import …`: adapter inputs from files, and replay of quarantined inputs.

Each adapter adds its own command to `import_app` in its package's cli module."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn


def file_progress(console: Console) -> Progress:
    """The progress bar of a streamed file import: bytes read per file, and time."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=console
    )


import_app = typer.Typer(help="Import source files through the adapters, or replay quarantined inputs.")


@import_app.callback(invoke_without_command=True)
def import_main(
    ctx: typer.Context,
    replay: Annotated[int | None, typer.Option(help="Replay the quarantined input with this id.")] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if replay is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from gateway.adapters.replay import replay_item

    raise typer.Exit(replay_item(replay))


# Each adapter's import command registers itself on import_app when its cli module is imported.
from gateway.adapters.bestallningsportalen import cli as _bestallningsportalen_cli  # noqa: E402, F401
from gateway.adapters.device_register import cli as _device_register_cli  # noqa: E402, F401
from gateway.adapters.hl7v2 import cli as _hl7v2_cli  # noqa: E402, F401
