"""The ``studio`` command line. Thin: it parses, calls the public API, and reports.

Every user-facing failure is a StudioError, printed as one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.table import Table

from studio.errors import StudioError

app = typer.Typer(
    name="studio",
    help="Human avatars and animation: body-model guidance from images, videos and mocap.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main_options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def doctor(
    body_model_dir: Path | None = typer.Option(None, "--body-model-dir", help="Folder with SMPLX_NEUTRAL.npz."),
    weights: Path | None = typer.Option(None, "--weights", help="Folder with pipeline weights."),
) -> None:
    """Show what this machine can run: versions, GPU, renderer, body models, estimator models, weights."""
    from studio.doctor import run_checks

    checks = run_checks(
        body_model_dir=str(body_model_dir) if body_model_dir else None,
        weights=str(weights) if weights else None,
    )
    table = Table(title="studio doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for c in checks:
        status = "[green]ok[/]" if c.ok else ("[red]missing[/]" if c.required else "[yellow]absent[/]")
        table.add_row(c.name, status, c.detail)
    Console().print(table)
    broken = [c.name for c in checks if c.required and not c.ok]
    if broken:
        raise StudioError(f"the embedded defaults cannot run: {', '.join(broken)} (see the table above)")
    Console().print("[green]The embedded defaults work on this machine.[/]")


@app.command()
def render(
    motion: Path = typer.Argument(..., help="A motion .npz (HumanCondition) from studio."),
    output: str = typer.Option(..., "-o", "--output", help="OUT.mp4 for a side-by-side video, or DIR/ for PNGs."),
    maps: str = typer.Option("depth,normal,semantic,skeleton,mask", "--maps", help="Comma-separated maps."),
    size: int = typer.Option(512, "--size", help="Longer side of each map in pixels."),
    body_model_dir: Path | None = typer.Option(None, "--body-model-dir", help="Folder with SMPLX_NEUTRAL.npz (smplx motions)."),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Write each map's name on the video."),
) -> None:
    """Render guidance maps of a motion, side by side into a video or as PNG files per map and frame."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from studio.body import load_body_model
    from studio.condition import HumanCondition
    from studio.media import VIDEO_SUFFIXES, VideoWriter, atomic_path, hstack_frames, to_rgb, write_image
    from studio.render import parse_maps

    names = parse_maps(maps)
    cond = HumanCondition.load(motion)
    model = load_body_model(cond.body_model, model_dir=body_model_dir)
    as_dir = output.endswith(("/", "\\")) or Path(output).is_dir()
    output = Path(output)
    video_names = [n for n in names if n != "depth_metric"]
    if not as_dir:
        if output.suffix.lower() not in VIDEO_SUFFIXES:
            raise StudioError(f"{output}: video output must end in {', '.join(VIDEO_SUFFIXES)} (or give DIR/ for PNGs)")
        if not video_names:
            raise StudioError("depth_metric is float data: write it to a folder (-o DIR/), not a video")
    progress = Progress(
        TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )
    with progress:
        task = progress.add_task("render", total=cond.num_frames)
        chunks = cond.iter_render(names, size=size, body_model=model, chunk_size=16)
        if as_dir:
            output.mkdir(parents=True, exist_ok=True)
            frame = 0
            for chunk in chunks:
                n = len(next(iter(chunk.values())))
                for t in range(n):
                    for name in names:
                        image = chunk[name][t]
                        if name == "depth_metric":
                            with atomic_path(output / f"{name}_{frame + t:05d}.npy") as tmp:
                                with open(tmp, "wb") as f:
                                    np.save(f, image)
                        else:
                            write_image(output / f"{name}_{frame + t:05d}.png", image)
                frame += n
                progress.advance(task, n)
        else:
            with VideoWriter(output, fps=cond.fps) as writer:
                for chunk in chunks:
                    n = len(chunk[video_names[0]])
                    for t in range(n):
                        tiles = [to_rgb(chunk[name][t]) for name in video_names]
                        writer.write(hstack_frames(tiles, labels=video_names if labels else None))
                    progress.advance(task, n)
    console.print(f"wrote {output} ({cond.num_frames} frames, {', '.join(names)})")


def main() -> None:
    """Console-script entry point: run the app, turn errors into one line each."""
    try:
        app(standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        console.print("[red]interrupted[/]; no partial output was left behind")
        sys.exit(130)
    except StudioError as exc:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line, the traceback on request
        if _state["debug"]:
            raise
        console.print(
            f"[red]internal error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
