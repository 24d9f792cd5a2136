"""`gateway import …`: adapter inputs from files, and replay of quarantined inputs.

Each adapter adds its own command to `import_app` in its package's cli module."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.model.types import Json

CHUNK = 1 << 16
console = Console(stderr=True, soft_wrap=True)


def file_progress(console: Console) -> Progress:
    """The progress bar of a streamed file import: bytes read per file, and time."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=console
    )


def read_chunks(path: Path, advance: Callable[[int], None]) -> Iterator[str]:
    """A text file in chunks (a BOM dropped), reporting the bytes read to the progress bar."""
    with path.open(encoding="utf-8-sig") as handle:
        while chunk := handle.read(CHUNK):
            advance(len(chunk.encode()))
            yield chunk


def count(tally: Counter[str], entry: Json) -> str:
    """Count one batch-response entry as created, updated, unchanged or rejected; its status."""
    status = str(entry["response"]["status"])
    if status.startswith("201"):
        tally["created"] += 1
    elif status.startswith("200"):
        text = str(entry["response"].get("outcome", {}))
        tally["unchanged" if "nothing changed" in text else "updated"] += 1
    else:
        tally["rejected"] += 1
    return status


def describe(entry: Json) -> str:
    """The errors of a rejected batch-response entry, each with the field it names."""
    response = entry.get("response")
    outcome = response.get("outcome", {}) if isinstance(response, dict) else {}
    issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
    return "; ".join(
        f"{issue.get('diagnostics')} ({', '.join(issue.get('expression', []))})"
        for issue in issues
        if issue.get("severity") in ("error", "fatal")
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
