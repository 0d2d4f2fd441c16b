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
_BODY_CHOICES = "anny, smplx or smpl"  # the names of studio.body.BODY_MODELS (checked against it when loading)
_BODY_DIR_HELP = "Folder with your body model files (SMPLX_NEUTRAL.npz for smplx, SMPL_NEUTRAL.pkl for smpl; subfolders smplx/, smpl/ work too)."
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


def _progress(label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # Transient: the bar goes away when the work ends, so a failure leaves only its one-line error.
    # Off where stderr is not a terminal (a log file, a pipe): there it would only print blank lines.
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal
    )


def _file_output(raw: str | None, suffixes: tuple[str, ...] | None, what: str) -> Path | None:
    """An output file option: it must name a file (not end in a slash) with one of ``suffixes`` (None:
    the job checks the suffix)."""
    if raw is None:
        return None
    if not raw.strip() or raw.endswith(("/", "\\")):
        ending = f" ending in {', '.join(suffixes)}" if suffixes else ""
        raise StudioError(f"{raw!r}: {what} must be a file name{ending}, not a folder")
    path = Path(raw)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise StudioError(f"{path}: {what} must end in {', '.join(suffixes)}")
    return path


@app.command()
def doctor(
    body_model_dir: Path | None = typer.Option(None, "--body-model-dir", help=_BODY_DIR_HELP),
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
    _print_pipelines(str(weights) if weights else None)
    broken = [c.name for c in checks if c.required and not c.ok]
    if broken:
        raise StudioError(f"the embedded defaults cannot run: {', '.join(broken)} (see the table above)")
    Console().print("[green]The embedded defaults work on this machine.[/]")


def _print_pipelines(weights: str | None, task: str | None = None) -> None:
    from studio.doctor import pipeline_rows

    table = Table(title="pipelines (the studio.pipelines entry points)", show_lines=False)
    for column in ("pipeline", "tasks", "weights", "GPU", "runs here"):
        table.add_column(column, overflow="fold")
    for row in pipeline_rows(weights, task):
        table.add_row(*row)
    Console().print(table)


@app.command()
def pipelines(
    weights: Path | None = typer.Option(None, "--weights", help="Folder with pipeline weights (else $STUDIO_WEIGHTS)."),
    task: str | None = typer.Option(None, "--task", help="Only pipelines with this task: animate, image, avatar, novel_view or hoi."),
    settings: bool = typer.Option(False, "--settings", help="Also list each pipeline's settings (for --set key=value)."),
) -> None:
    """List the registered pipelines: their tasks, where their weights are looked for and whether they
    were found, and whether they need a GPU."""
    from studio import validate
    from studio.pipeline import TASKS, config_fields
    from studio.registry import registered_pipelines

    if task is not None:
        validate.one_of(task, TASKS, name="--task")
    _print_pipelines(str(weights) if weights else None, task)
    if settings:
        for name, cls in registered_pipelines(task).items():
            table = Table(title=f"{name} settings (--set key=value)", show_lines=False)
            for column in ("key", "type", "default", "what it does"):
                table.add_column(column, overflow="fold")
            for f in config_fields(cls.Config):
                table.add_row(f.name, f.type_name, repr(f.default), f.doc)
            Console().print(table)


@app.command()
def render(
    motion: Path = typer.Argument(..., help="A motion .npz (HumanCondition) from studio."),
    output: str = typer.Option(..., "-o", "--output", help="OUT.mp4 for a side-by-side video, or DIR/ for PNGs."),
    maps: str = typer.Option("depth,normal,semantic,skeleton,mask", "--maps", help="Comma-separated maps."),
    size: int = typer.Option(512, "--size", help="Longer side of each map in pixels."),
    body_model_dir: Path | None = typer.Option(None, "--body-model-dir", help=_BODY_DIR_HELP),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Write each map's name on the video."),
) -> None:
    """Render guidance maps of a motion, side by side into a video or as PNG files per map and frame."""
    import numpy as np
    from studio.body import load_body_model
    from studio.condition import HumanCondition
    from studio.media import VIDEO_OUTPUT_SUFFIXES, VideoWriter, atomic_path, write_image
    from studio.render import iter_map_video_frames, parse_maps

    from studio import validate
    from studio.jobs import settings_path, write_settings
    from studio.outputs import Publication

    names = parse_maps(maps)
    size = validate.size(size)
    as_dir = output.endswith(("/", "\\")) or Path(output).is_dir()
    output = Path(output)
    video_names = [n for n in names if n != "depth_metric"]
    if not as_dir:
        if output.suffix.lower() not in VIDEO_OUTPUT_SUFFIXES:
            raise StudioError(f"{output}: video output must end in {', '.join(VIDEO_OUTPUT_SUFFIXES)} (or give DIR/ for PNGs)")
        if not video_names:
            raise StudioError("depth_metric is float data: write it to a folder (-o DIR/), not a video")
    cond = HumanCondition.load(motion)
    model = load_body_model(cond.body_model, model_dir=body_model_dir)
    settings_file = settings_path(output, folder=as_dir)
    outputs = {"-o": output, "the settings file": settings_file}
    with Publication(outputs, inputs={"MOTION": motion}, folders=("-o",) if as_dir else ()), _progress("rendering") as progress:
        task = progress.add_task("render", total=cond.num_frames)
        if as_dir:
            frame = 0
            for chunk in cond.iter_render(names, size=size, body_model=model, chunk_size=16):
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
                for frame in iter_map_video_frames(cond, video_names, size=size, body_model=model, labels=labels):
                    writer.write(frame)
                    progress.advance(task, 1)
        write_settings(settings_file, {"motion": str(motion), "maps": list(names), "size": size, "labels": labels, "frames": cond.num_frames, "fps": cond.fps, "body_model": cond.body_model})
    console.print(f"wrote {output} ({cond.num_frames} frames, {', '.join(names)})")


@app.command()
def pose(
    media: Path = typer.Argument(..., help="An image or a video of a person."),
    output: str = typer.Option(..., "-o", "--output", help="The motion .npz (HumanCondition) to write."),
    body: str = typer.Option("anny", "--body", help=f"Body model: {_BODY_CHOICES} (anny is embedded; the others need your model files, see --body-model-dir)."),
    person: int | None = typer.Option(None, "--person", help="Whom to follow when several people are in view (0 = largest)."),
    preview: str | None = typer.Option(None, "--preview", help="Also write the input with the fitted body over it (.mp4 for videos, .png for images)."),
    hands: bool | None = typer.Option(None, "--hands/--no-hands", help="Track and fit fingers (default: on for images, off for videos)."),
    focal: float | None = typer.Option(None, "--focal", help="Focal length in pixels (default: from the photo's EXIF, else estimated from the body's perspective)."),
    body_model_dir: Path | None = typer.Option(None, "--body-model-dir", help=_BODY_DIR_HELP),
) -> None:
    """Estimate and fit a body to one person in an image or a video; write a motion .npz."""
    from studio import validate
    from studio.body import load_body_model
    from studio.capture import pose_job, pose_notes
    from studio.fit import FitConfig
    from studio.media import IMAGE_SUFFIXES, VIDEO_OUTPUT_SUFFIXES, VIDEO_SUFFIXES, video_info

    output = _file_output(output, (".npz",), "the motion file")
    is_video = media.suffix.lower() in VIDEO_SUFFIXES
    preview = _file_output(preview, VIDEO_OUTPUT_SUFFIXES if is_video else IMAGE_SUFFIXES, f"the preview of {'a video' if is_video else 'an image'}")
    if focal is not None:
        focal = validate.focal(focal, name="--focal")
    if not media.is_file():
        raise StudioError(f"{media}: no such file")
    model = load_body_model(body, model_dir=body_model_dir)
    total = video_info(media).num_frames if is_video else 1
    with _progress("fitting") as progress:
        task = progress.add_task("pose", total=total)
        # Without --focal, the focal length comes from the photo's EXIF or is estimated (studio.fit.focal).
        result = pose_job(
            media, output, body_model=model, config=FitConfig(focal_length=focal), person=person, hands=hands, preview=preview,
            on_frames=lambda n: progress.advance(task, n),
        )  # fmt: skip
        progress.update(task, total=result.condition.num_frames, completed=result.condition.num_frames)
    notes = pose_notes(result)
    extra = f"; {'; '.join(notes)}" if notes else ""
    console.print(f"wrote {output} ({result.condition.num_frames} frames, {model.name} body){extra}", highlight=False, soft_wrap=True)
    if preview is not None:
        console.print(f"wrote {preview}", highlight=False)


@app.command()
def animate(
    reference: Path = typer.Argument(..., help="An image of one person (full body works best)."),
    motion: Path = typer.Argument(..., help="A video, a .bvh, or a motion .npz (from studio pose / studio motion import)."),
    output: str = typer.Option("outputs/animation.mp4", "-o", "--output", help="The video to write."),
    backend: str = typer.Option("auto", "--backend", help="A pipeline with the animate task (see `studio pipelines`), or auto: one whose weights are found, else the embedded default."),
    settings: list[str] = typer.Option([], "--set", help="A setting of the pipeline, key=value (repeatable; `studio pipelines --settings` lists them)."),
    weights: Path | None = typer.Option(None, "--weights", help="Folder with pipeline weights (else $STUDIO_WEIGHTS)."),
    size: int = typer.Option(512, "--size", help="Longer side of the output in pixels."),
    guidance_out: str | None = typer.Option(None, "--guidance-out", help="Also write the guidance maps as a video."),
    side_by_side: str | None = typer.Option(None, "--side-by-side", help="Also write reference | motion | guidance | result."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last finished chunk."),
    person: int | None = typer.Option(None, "--person", help="Which person of the reference to animate (0 = largest)."),
    seed: int = typer.Option(0, "--seed", help="Noise seed of a stochastic pipeline."),
) -> None:
    """Animate the person in REFERENCE with MOTION (the README's main job)."""
    from studio import validate
    from studio.animate import AnimateConfig
    from studio.animate import animate as run_animate
    from studio.body import load_body_model
    from studio.media import VIDEO_OUTPUT_SUFFIXES

    output = _file_output(output, VIDEO_OUTPUT_SUFFIXES, "the output")
    guidance_out = _file_output(guidance_out, VIDEO_OUTPUT_SUFFIXES, "--guidance-out")
    side_by_side = _file_output(side_by_side, VIDEO_OUTPUT_SUFFIXES, "--side-by-side")
    size = validate.integer(size, name="--size", low=64, high=validate.MAX_SIZE)
    config = AnimateConfig(backend=backend, size=size, weights=str(weights) if weights else None, person=person, seed=seed, settings=tuple(settings))
    model = load_body_model()  # the embedded default
    with _progress("{task.description}") as progress:
        task = progress.add_task("starting", total=None)

        def on_stage(name: str, total: int) -> None:
            progress.reset(task, description=name, total=total or None)

        result = run_animate(
            reference, motion, output, config=config, body_model=model, resume=resume,
            guidance_out=guidance_out, side_by_side=side_by_side,
            on_stage=on_stage, on_frames=lambda n: progress.advance(task, n),
        )  # fmt: skip
    for note in result.notes:
        console.print(note, highlight=False, soft_wrap=True)
    console.print(f"wrote {result.output} ({result.num_frames} frames at {result.fps:g} fps) and {result.settings_path}", highlight=False, soft_wrap=True)
    for extra in (guidance_out, side_by_side):
        if extra is not None:
            console.print(f"wrote {extra}", highlight=False)


def _task_options(backend: str, weights: Path | None, settings: list[str], seed: int):
    from studio.tasks import TaskOptions

    return TaskOptions(backend=backend, weights=str(weights) if weights else None, settings=tuple(settings), seed=seed)


def _report(out) -> None:
    for note in out.notes:
        console.print(note, highlight=False, soft_wrap=True)
    for path in out.written:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


_BACKEND_HELP = "A pipeline with this task (see `studio pipelines`), or auto: one whose weights are found, else the task's embedded default."
_SET_HELP = "A setting of the pipeline, key=value (repeatable; `studio pipelines --settings` lists them)."


@app.command()
def avatar(
    reference: Path = typer.Argument(..., help="A photo of one person (full body works best)."),
    output: str = typer.Option("outputs/avatar.ply", "-o", "--output", help="The avatar file to write (its format is the pipeline's, e.g. .ply)."),
    backend: str = typer.Option("auto", "--backend", help=_BACKEND_HELP),
    settings: list[str] = typer.Option([], "--set", help=_SET_HELP),
    weights: Path | None = typer.Option(None, "--weights", help="Folder with pipeline weights (else $STUDIO_WEIGHTS)."),
    preview: str | None = typer.Option(None, "--preview", help="Also write a video of the avatar (an orbit)."),
    person: int | None = typer.Option(None, "--person", help="Which person of the photo (0 = largest)."),
    seed: int = typer.Option(0, "--seed", help="Seed of a stochastic pipeline."),
    views: int | None = typer.Option(None, "--views", help="Views of the multi-view prior (the pipeline's `views` setting)."),
    steps: int | None = typer.Option(None, "--steps", help="Optimisation steps (the pipeline's `steps` setting)."),
    prior: str | None = typer.Option(None, "--prior", help="The multi-view prior, e.g. mesh (embedded) or sv3d (weights) (the `prior` setting)."),
) -> None:
    """Build a 3D avatar of the person in a photo."""
    from studio.body import load_body_model
    from studio.tasks import run_avatar

    settings = [*settings, *(f"{key}={value}" for key, value in (("views", views), ("steps", steps), ("prior", prior)) if value is not None)]
    output = _file_output(output, None, "the avatar")  # its format is the pipeline's (run_avatar checks it)
    with _progress("{task.description}") as progress:
        task = progress.add_task("starting", total=None)
        out = run_avatar(
            reference, output, options=_task_options(backend, weights, settings, seed), body_model=load_body_model(), person=person,
            preview=preview, on_stage=lambda name, total: progress.reset(task, description=name, total=total or None),
            on_frames=lambda n: progress.advance(task, n),
        )  # fmt: skip
    _report(out)


@app.command()
def image(
    output: str = typer.Option("outputs/image.png", "-o", "--output", help="The image to write (.png, .jpg or .webp)."),
    prompt: str | None = typer.Option(None, "--prompt", help="What to show (may be empty with --pose: pose-only generation)."),
    pose: Path | None = typer.Option(None, "--pose", help="A motion .npz (from studio pose, studio motion import or studio hoi)."),
    frame: int | None = typer.Option(None, "--frame", help="Which frame of the pose file (needed when it has several)."),
    size: int = typer.Option(512, "--size", help="Longer side in pixels (rounded to a multiple of 64)."),
    negative: str | None = typer.Option(None, "--negative", help="What not to show."),
    maps_out: str | None = typer.Option(None, "--maps-out", help="A folder for the pose's guidance maps and the maps the pipeline makes."),
    backend: str = typer.Option("auto", "--backend", help=_BACKEND_HELP),
    settings: list[str] = typer.Option([], "--set", help=_SET_HELP),
    weights: Path | None = typer.Option(None, "--weights", help="Folder with pipeline weights (else $STUDIO_WEIGHTS)."),
    seed: int = typer.Option(0, "--seed", help="Noise seed."),
    steps: int | None = typer.Option(None, "--steps", help="Denoising steps (the pipeline's `steps` setting; --set steps=N)."),
) -> None:
    """Generate a human image from a prompt and/or a pose."""
    if steps is not None:
        settings = [*settings, f"steps={steps}"]
    from studio import validate
    from studio.tasks import run_image

    size = validate.integer(size, name="--size", low=64, high=validate.MAX_SIZE)
    output = _file_output(output, (".png", ".jpg", ".jpeg", ".webp"), "the image")
    with _progress("{task.description}") as progress:
        task = progress.add_task("starting", total=None)
        out = run_image(
            output, prompt=prompt, pose=pose, options=_task_options(backend, weights, settings, seed), frame=frame, size=size,
            negative_prompt=negative, maps_out=maps_out, on_stage=lambda name, total: progress.reset(task, description=name, total=total or None),
            on_frames=lambda n: progress.advance(task, n),
        )  # fmt: skip
    _report(out)


@app.command("novel-view")
def novel_view(
    references: list[Path] = typer.Argument(..., help="One or more photos of the same person."),
    output: str = typer.Option("outputs/novel_view.mp4", "-o", "--output", help="The video to write."),
    motion: Path | None = typer.Option(None, "--motion", help="Render this motion (a video, .bvh or motion .npz) instead of an orbit."),
    orbit: int = typer.Option(60, "--orbit", help="Frames of the orbit around the person (without --motion)."),
    size: int = typer.Option(512, "--size", help="Longer side of the frames in pixels."),
    backend: str = typer.Option("auto", "--backend", "--method", help=_BACKEND_HELP),
    settings: list[str] = typer.Option([], "--set", help=_SET_HELP),
    weights: Path | None = typer.Option(None, "--weights", help="Folder with pipeline weights (else $STUDIO_WEIGHTS)."),
    person: int | None = typer.Option(None, "--person", help="Which person of the photos (0 = largest)."),
    seed: int = typer.Option(0, "--seed", help="Seed of a stochastic pipeline."),
) -> None:
    """Render the person of one or more photos from new viewpoints (an orbit) or in a new motion."""
    from studio import validate
    from studio.body import load_body_model
    from studio.media import VIDEO_OUTPUT_SUFFIXES
    from studio.tasks import run_novel_view

    size = validate.integer(size, name="--size", low=64, high=validate.MAX_SIZE)
    output = _file_output(output, VIDEO_OUTPUT_SUFFIXES, "the output")
    with _progress("{task.description}") as progress:
        task = progress.add_task("starting", total=None)
        out = run_novel_view(
            references, output, options=_task_options(backend, weights, settings, seed), body_model=load_body_model(), motion=motion,
            orbit=orbit, size=size, person=person, on_stage=lambda name, total: progress.reset(task, description=name, total=total or None),
            on_frames=lambda n: progress.advance(task, n),
        )  # fmt: skip
    _report(out)


@app.command()
def hoi(
    prompt: str = typer.Argument(..., help='What the person does with what, e.g. "a person sitting on a stool".'),
    output: str = typer.Option("outputs/scene.glb", "-o", "--output", help="The scene to write (.glb, .gltf, .obj or .ply)."),
    object: str | None = typer.Option(None, "--object", help="An object name (see the pipeline's list) or a mesh file (.glb, .obj)."),
    image: str | None = typer.Option(None, "--image", help="Also write a rendered image of the scene."),
    condition: str | None = typer.Option(None, "--condition", help="Also write the human's pose as a motion .npz (for studio render / image / animate)."),
    backend: str = typer.Option("auto", "--backend", help=_BACKEND_HELP),
    settings: list[str] = typer.Option([], "--set", help=_SET_HELP),
    weights: Path | None = typer.Option(None, "--weights", help="Folder with pipeline weights (else $STUDIO_WEIGHTS)."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
) -> None:
    """Compose a human interacting with an object from a sentence."""
    from studio.body import load_body_model
    from studio.media import IMAGE_SUFFIXES
    from studio.tasks import SCENE_SUFFIXES, run_hoi

    output = _file_output(output, SCENE_SUFFIXES, "the scene")
    image = _file_output(image, IMAGE_SUFFIXES, "--image")
    condition = _file_output(condition, (".npz",), "--condition")
    with _progress("{task.description}") as progress:
        task = progress.add_task("starting", total=None)
        out = run_hoi(
            prompt, output, options=_task_options(backend, weights, settings, seed), body_model=load_body_model(), object=object,
            image=image, condition=condition, on_stage=lambda name, total: progress.reset(task, description=name, total=total or None),
            on_frames=lambda n: progress.advance(task, n),
        )  # fmt: skip
    _report(out)


@app.command()
def batch(
    job: str = typer.Argument(..., help="The job: pose, animate or render."),
    inputs: list[Path] = typer.Argument(..., help="The files: images/videos (pose), reference photos (animate), motion .npz files (render)."),
    output: Path = typer.Option(..., "-o", "--output", help="The output folder: one output per input, named after it, and summary.tsv."),
    motion: Path | None = typer.Option(None, "--motion", help="animate: the motion every reference performs (a video, .bvh or motion .npz)."),
    body: str = typer.Option("anny", "--body", help=f"pose: the body model, {_BODY_CHOICES}."),
    hands: bool | None = typer.Option(None, "--hands/--no-hands", help="pose: track and fit fingers (default: on for images, off for videos)."),
    focal: float | None = typer.Option(None, "--focal", help="pose: focal length in pixels (default: EXIF, else estimated)."),
    backend: str = typer.Option("auto", "--backend", help="animate: the pipeline (see `studio pipelines`)."),
    settings: list[str] = typer.Option([], "--set", help="animate: a setting of the pipeline, key=value (repeatable)."),
    size: int = typer.Option(512, "--size", help="animate and render: longer side of the output in pixels."),
    maps: str = typer.Option("depth,normal,semantic,skeleton,mask", "--maps", help="render: comma-separated maps."),
) -> None:
    """Run one job over many files: resumable (finished outputs are skipped), with a summary table;
    spread over processes, GPUs and machines when started with `accelerate launch` or `torchrun`."""
    from studio.batch import BatchOptions, process_state, run_batch

    options = BatchOptions(
        body=body, hands=hands, focal=focal, motion=None if motion is None else str(motion), backend=backend,
        settings=tuple(settings), size=size, maps=maps,
    )  # fmt: skip
    state = process_state()  # the processes accelerate launch / torchrun started, or this one alone
    processes = state.num_processes

    def on_item(item) -> None:
        tag = f"process {item.process + 1}/{processes}: " if processes > 1 else ""
        detail = f": {item.reason}" if item.reason else ""
        console.print(f"{tag}{item.status} {item.input} -> {item.output} ({item.seconds:.1f} s){detail}", highlight=False, soft_wrap=True)

    result = run_batch(job, inputs, output, options=options, state=state, on_item=on_item)
    if state.use_distributed:  # leave the process group cleanly (an abrupt exit can abort the other side)
        state.destroy_process_group()
    if not result.is_main:
        return
    table = Table(title=f"studio batch {job}: {len(result.items)} inputs, {result.num_processes} process{'es' if result.num_processes > 1 else ''}")
    for column in ("input", "output", "status", "seconds", "reason"):
        table.add_column(column, overflow="fold")
    colours = {"done": "green", "skipped": "cyan", "failed": "red"}
    for item in result.items:
        table.add_row(str(item.input), str(item.output), f"[{colours[item.status]}]{item.status}[/]", f"{item.seconds:.1f}", item.reason)
    Console(stderr=True).print(table)
    console.print(f"wrote {result.summary}", highlight=False)
    if result.failed:
        raise StudioError(f"{len(result.failed)} of {len(result.items)} inputs failed (see {result.summary})")


motion_app = typer.Typer(help="Import mocap (BVH, SMPL-X/AMASS .npz) and export motions to BVH.", no_args_is_help=True)
app.add_typer(motion_app, name="motion")


@motion_app.command("import")
def motion_import(
    source: Path = typer.Argument(..., help="A .bvh (SMPL-X, CMU or Mixamo names) or SMPL-X/AMASS .npz."),
    output: str = typer.Option(..., "-o", "--output", help="The motion .npz (HumanCondition) to write."),
    body: str = typer.Option("anny", "--body", help=f"Body model to retarget onto: {_BODY_CHOICES} (anny is embedded; the others need your model files)."),
    fps: float = typer.Option(30.0, "--fps", help="Resample to this frame rate (0: keep the file's)."),
    up: str = typer.Option("auto", "--up", help="Up axis of an .npz: auto (z for AMASS files), y or z."),
    size: str = typer.Option("640x480", "--size", help="Image size of the framing camera, HEIGHTxWIDTH."),
    body_model_dir: Path | None = typer.Option(None, "--body-model-dir", help=_BODY_DIR_HELP),
) -> None:
    """Retarget a mocap file onto a body model, with a camera that frames it."""
    from studio import validate
    from studio.body import load_body_model
    from studio.jobs import settings_path, write_settings
    from studio.motion import import_motion
    from studio.outputs import Publication

    output = _file_output(output, (".npz",), "the motion file")
    image_size = validate.image_size(size)
    up = validate.one_of(up, ("auto", "y", "z"), name="--up")
    fps = None if fps == 0 else validate.fps(fps, name="--fps")
    model = load_body_model(body, model_dir=body_model_dir)
    settings_file = settings_path(output)
    with Publication({"-o": output, "the settings file": settings_file}, inputs={"SOURCE": source}):
        cond = import_motion(source, model, fps=fps, up=up, image_size=image_size)
        cond.save(output, body_model=model)
        write_settings(settings_file, {"source": str(source), "body_model": model.name, "fps": cond.fps, "fps_asked": fps, "up": up, "size": list(image_size), "frames": cond.num_frames})
    console.print(f"wrote {output} ({cond.num_frames} frames at {cond.fps:g} fps, {model.name} body)", highlight=False)


@motion_app.command("export")
def motion_export(
    motion: Path = typer.Argument(..., help="A motion .npz from studio."),
    output: str = typer.Option(..., "-o", "--output", help="The .bvh to write."),
    body_model_dir: Path | None = typer.Option(None, "--body-model-dir", help=_BODY_DIR_HELP),
) -> None:
    """Write a motion as BVH (SMPL-X joint names, metres, Y up) for Blender and other tools."""
    from studio.body import load_body_model
    from studio.condition import HumanCondition
    from studio.motion import export_bvh

    from studio.outputs import Publication

    output = _file_output(output, (".bvh",), "the BVH file")
    cond = HumanCondition.load(motion)
    model = load_body_model(cond.body_model, model_dir=body_model_dir)
    with Publication({"-o": output}, inputs={"MOTION": motion}):
        export_bvh(cond, output, body_model=model)
    console.print(f"wrote {output} ({cond.num_frames} frames, 55 joints)", highlight=False)


def run(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: sys.argv[1:]) and return the exit status, with every
    error turned into one line: 1 for a user's mistake, 2 for a usage error or a bug (with
    ``internal error``), 130 for Ctrl-C. ``--debug`` lets the traceback through."""
    from studio.outputs import USER_OS_ERRORS, os_error_message

    console.file = sys.stderr
    _state["debug"] = False
    try:
        code = app(args=argv, standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into an exit code when not in standalone mode
            raise KeyboardInterrupt
        return code if isinstance(code, int) else 0
    except (click.exceptions.ClickException, typer.TyperException) as exc:  # usage errors (typer vendors its own click)
        if not hasattr(exc, "show"):
            raise
        exc.show()
        return getattr(exc, "exit_code", 2)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        console.print("[red]interrupted[/]; no output that looks complete was left behind (studio animate: --resume continues)", soft_wrap=True)
        return 130
    except (StudioError, OSError, MemoryError) as exc:
        if _state["debug"]:
            raise
        if isinstance(exc, OSError) and exc.errno not in USER_OS_ERRORS:
            return _internal_error(exc)
        if isinstance(exc, OSError):
            message = os_error_message(exc)
        elif isinstance(exc, MemoryError):
            message = "out of memory; try a smaller --size or a shorter input"
        else:
            message = str(exc)
        console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
        return 1
    except Exception as exc:  # a bug: still one line, the traceback on request
        if _state["debug"]:
            raise
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    console.print(
        f"[red]internal error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
        highlight=False,
        soft_wrap=True,
    )
    return 2


def main() -> None:
    """Console-script entry point: filter native log chatter, run, exit with run()'s status."""
    from studio.native_logs import filter_native_stderr

    filter_native_stderr()
    sys.exit(run())


if __name__ == "__main__":
    main()
