"""studio's web demo (Gradio 6): Pose, Animate and Render, plus what the pipeline registry holds.

    .venv/bin/python gradio_app.py      # serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860)

The app only calls studio's public API. Jobs run one at a time through the queue. Path policy:
- nothing from a request becomes part of a path: a browser session's folder under WORK is named by a
  digest of its session id, and every folder is checked to lie inside WORK before anything is
  written or deleted (``session_dir``);
- only files uploaded through the page (or the bundled examples) are ever opened: a path sent by a
  client is refused unless it lies in Gradio's upload folder or in assets/ (``uploaded``);
- WORK is emptied when the app starts (a killed server leaves no half-written files behind) and a
  session's folder when its page closes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from studio import validate
from studio.errors import StudioError

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
MEDIA = ASSETS / "media"
WORK = Path(tempfile.gettempdir()) / "studio-gradio"  # one subfolder per browser session
UPLOADS = Path(os.environ.get("GRADIO_TEMP_DIR", Path(tempfile.gettempdir()) / "gradio"))
MAX_FILE_SIZE = "100mb"
MAX_SECONDS = 20.0  # longest video or motion the demo takes (the CLI has no limit)
MAX_QUEUE = 8
MAX_SIZE = 768

logger = logging.getLogger("studio.gradio")


# --- plumbing: errors, progress, paths, sessions --------------------------------------------------


def one_line_errors(fn):
    """Show StudioError (and anything unexpected) as one readable message in the page, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except StudioError as exc:
            raise gr.Error(without_server_paths(str(exc)), print_exception=False) from None
        except OSError as exc:
            from studio.outputs import USER_OS_ERRORS, os_error_message

            if exc.errno not in USER_OS_ERRORS:
                raise
            raise gr.Error(without_server_paths(os_error_message(exc)), print_exception=False) from None
        except Exception as exc:  # a bug: keep the traceback in the server log only
            logger.exception("internal error")
            raise gr.Error(without_server_paths(f"internal error: {type(exc).__name__}: {exc}"), print_exception=False) from None

    return wrapper


def without_server_paths(message: str) -> str:
    """Messages name uploads by their file name, not by where the server keeps them."""
    for base in (UPLOADS, WORK):
        message = re.sub(re.escape(str(base)) + r"(?:/[^/\s]+)*/", "", message)
    return message


def uploaded(path: str | None, what: str) -> Path:
    """A file the page sent: it must exist and lie in Gradio's upload folder or the bundled assets."""
    if not path:
        raise StudioError(f"add {what} first")
    p = Path(path).resolve()
    if not any(p.is_relative_to(base.resolve()) for base in (UPLOADS, ASSETS)):
        raise StudioError(f"{what}: only files uploaded through this page can be used")
    if not p.is_file():
        raise StudioError(f"{what}: the upload is gone; add it again")
    return p


def refuse_long(path: Path, what: str) -> None:
    """Refuse a video or motion longer than MAX_SECONDS before any work starts (read from its header)."""
    from studio.motion import motion_duration

    seconds = motion_duration(path)
    if seconds > MAX_SECONDS + 0.5:
        raise StudioError(f"the {what} is {seconds:.0f} s long; this demo takes up to {MAX_SECONDS:.0f} s (the studio CLI has no limit)")


def session_dir(request: gr.Request) -> Path:
    """The session's folder: WORK/<digest of the session id>. The id is chosen by the browser, so it
    never becomes part of a path itself (``..`` or ``../../x`` would name folders outside WORK)."""
    digest = hashlib.sha256(str(request.session_hash or "anonymous").encode("utf-8", "replace")).hexdigest()[:32]
    return inside_work(WORK / digest)


def inside_work(path: Path) -> Path:
    """``path`` if it resolves inside WORK (and is not WORK itself); refused otherwise."""
    resolved, base = path.resolve(), WORK.resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise StudioError("refused: a path outside the demo's work folder")
    return resolved


def session_folder(request: gr.Request) -> Path:
    """A new folder for one job, inside the session's folder."""
    folder = session_dir(request)
    folder.mkdir(parents=True, exist_ok=True)
    return inside_work(Path(tempfile.mkdtemp(dir=folder)))


def end_session(request: gr.Request) -> None:
    try:
        shutil.rmtree(session_dir(request), ignore_errors=True)
    except StudioError:
        logger.warning("refused to remove a folder outside %s", WORK)


def reset_work() -> None:
    """Empty WORK (the sessions of an earlier run are gone with its server)."""
    if WORK.is_dir() and not WORK.is_symlink():
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)


def reference_image(**kwargs) -> gr.Image:
    """A gr.Image that passes the uploaded file on unchanged (studio reads EXIF orientation, CMYK and
    16-bit itself) and turns an upload that is not an image into one line naming it. (Wrapped rather
    than subclassed: Gradio writes a .pyi stub beside the source of every component subclass.)"""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Exception:
            name = Path(getattr(payload, "orig_name", None) or "the upload").name
            raise gr.Error(f"{name}: not a readable image; upload a photo (.jpg, .png, .webp)", print_exception=False) from None

    image.preprocess = checked
    return image


class Tracker:
    """studio's (stage, frames) callbacks shown on a gr.Progress bar."""

    def __init__(self, progress: gr.Progress):
        self.progress, self.name, self.total, self.done = progress, "", 0, 0

    def stage(self, name: str, total: int) -> None:
        self.name, self.total, self.done = name, total, 0
        self.progress((0, total) if total else None, desc=name)

    def frames(self, n: int) -> None:
        self.done += n
        self.progress((min(self.done, self.total), self.total) if self.total else None, desc=self.name)


@functools.cache
def body_model():
    from studio.body import load_body_model

    return load_body_model()  # the embedded default


def available_backends() -> list[str]:
    """The animate pipelines that can run here at a practical speed, the embedded default first (the
    registry decides, for the CLI's `auto` as for this menu)."""
    from studio.registry import practical_pipelines

    return practical_pipelines("animate")


def pipelines_table() -> str:
    """A Markdown table of the registry (the rows `studio pipelines` prints)."""
    from studio.doctor import pipeline_rows

    rows = ["| pipeline | tasks | weights | GPU | runs here |", "|---|---|---|---|---|"]
    rows += ["| " + " | ".join(f"`{cell}`" if i == 0 else cell.replace("|", "/") for i, cell in enumerate(row)) + " |" for row in pipeline_rows()]
    if len(rows) == 2:
        rows.append("| (none registered) | | | | |")
    return "\n".join(rows)


def _unavailable(task: str) -> str | None:
    """Why no pipeline with ``task`` can run here (a Markdown note), or None when one can."""
    from studio.registry import practical_pipelines

    if practical_pipelines(task):
        return None
    return f"No pipeline for this task can run here yet; see the Pipelines tab for what each needs.\n\n{pipelines_table()}"


def setting_widget(pipeline: str, field) -> gr.components.Component:
    """A widget for one Config field (its doc as the hint)."""
    label, info = f"{field.name}", field.doc or None
    if field.choices:
        return gr.Dropdown([str(c) for c in field.choices], value=str(field.default), label=label, info=info)
    base = field.type_name.replace(" or none", "")
    if base == "bool":
        return gr.Checkbox(value=bool(field.default), label=label, info=info)
    if base in ("int", "float"):
        return gr.Number(value=field.default, precision=0 if base == "int" else None, label=label, info=info)
    return gr.Textbox(value="" if field.default is None else str(field.default), label=label, info=info)


class TaskControls:
    """A task's backend menu and each pipeline's settings (from its Config), built from the registry;
    a settings group shows when its pipeline is chosen."""

    def __init__(self, task: str, label: str = "backend (only those that can run here)") -> None:
        from studio.pipeline import config_fields
        from studio.registry import practical_pipelines, registered_pipelines

        self.task = task
        self.backends = practical_pipelines(task)
        pipelines = registered_pipelines(task)
        self.menu = gr.Dropdown(self.backends, value=self.backends[0], label=label, elem_id=f"{task}-backend")
        self.widgets: dict[tuple[str, str], gr.components.Component] = {}
        groups = {}
        for name in self.backends:
            with gr.Accordion(f"{name} settings", open=False, visible=name == self.backends[0]) as group:
                for field in config_fields(pipelines[name].Config):
                    if not field.names_a_path:  # a server path is never taken from request data (CLI only)
                        self.widgets[(name, field.name)] = setting_widget(name, field)
            groups[name] = group
        self.menu.change(lambda chosen: [gr.update(visible=n == chosen) for n in groups], self.menu, list(groups.values()))

    def bind(self, button: gr.Button, fn, inputs: list, outputs: list, *, api_name: str) -> None:
        """``button`` calls ``fn(*input values, request, progress, settings=...)``, where ``inputs``
        holds ``self.menu`` and settings are the chosen pipeline's, read from its widgets."""
        setting_widgets = list(self.widgets.values())
        menu_index = inputs.index(self.menu)
        count = len(inputs)

        def handler(request: gr.Request, progress=gr.Progress(), *values):
            own, settings = values[:count], values[count:]
            chosen = own[menu_index]
            return fn(*own, request, progress, settings=page_settings(self.widgets, dict(zip(setting_widgets, settings)), chosen))

        button.click(handler, [*inputs, *setting_widgets], outputs, api_name=api_name)


def page_settings(widgets: dict, values: dict, backend: str) -> dict[str, str]:
    """The chosen pipeline's settings as ``key=value`` texts, from its widgets' values (checked by the
    same parser as ``--set``)."""
    out = {}
    for (pipeline, key), widget in widgets.items():
        value = values.get(widget)
        if pipeline != backend or value is None or value == "":
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(int(value) if isinstance(value, float) and value.is_integer() else value)
    return out


# --- the jobs ----------------------------------------------------------------------------------


@one_line_errors
def run_pose(media: str | None, hands: bool, person: float | None, request: gr.Request, progress=gr.Progress()):
    """An image or video -> (preview image, preview video, guidance maps, motion.npz)."""
    from studio.capture import pose_file
    from studio.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, video_info

    path = uploaded(media, "an image or a video")
    is_image = path.suffix.lower() in IMAGE_SUFFIXES
    num_frames = 1
    if path.suffix.lower() in VIDEO_SUFFIXES:
        refuse_long(path, "video")
        num_frames = video_info(path).num_frames
    out = session_folder(request)
    preview = out / ("preview.png" if is_image else "preview.mp4")
    tracker = Tracker(progress)
    tracker.stage("estimating and fitting the body", 1 if is_image else num_frames)
    person = validate.integer(-1 if person is None else person, name="the person to follow", low=-1, high=99)
    chosen = None if person < 0 else person
    result = pose_file(path, body_model=body_model(), hands=hands, person=chosen, preview=preview, on_frames=tracker.frames)
    motion = result.condition.save(out / "motion.npz", body_model=body_model())
    maps = result.condition[0].render(("depth", "normal", "semantic", "skeleton"), size=512, body_model=body_model())
    gallery = [(m[0], name) for name, m in maps.items()]
    notes = []
    if result.num_people > 1:
        notes.append(f"{result.num_people} people in view; followed person {result.person} (0 = the largest; choose another above)")
    if result.missing_frames:
        notes.append(f"no person in {result.missing_frames} frames (filled)")
    summary = f"{result.condition.num_frames} frame(s) fitted" + (f"; {'; '.join(notes)}" if notes else "")
    return (
        gr.update(value=str(preview) if is_image else None, visible=is_image),
        gr.update(value=None if is_image else str(preview), visible=not is_image),
        gallery,
        str(motion),
        summary,
    )


@one_line_errors
def run_animate(
    reference: str | None, motion: str | None, backend: str, size: int, request: gr.Request, progress=gr.Progress(), *, settings: dict | None = None
):
    """A reference image + a motion (video, BVH or motion .npz) -> (video, side-by-side video, notes)."""
    from studio.animate import AnimateConfig, animate

    ref = uploaded(reference, "a reference image")
    mot = uploaded(motion, "a motion (a video, a .bvh or a motion .npz)")
    refuse_long(mot, "motion")
    if backend not in available_backends():
        raise StudioError(f"the '{backend}' backend cannot run here")
    out = session_folder(request)
    tracker = Tracker(progress)
    config = AnimateConfig(backend=backend, size=validate.integer(size, name="the longer side", low=128, high=MAX_SIZE), settings=settings or {})
    result = animate(
        ref, mot, out / "animation.mp4", config=config, body_model=body_model(), side_by_side=out / "side_by_side.mp4",
        on_stage=tracker.stage, on_frames=tracker.frames,
    )
    notes = "\n".join(f"- {n}" for n in result.notes)
    return str(result.output), str(out / "side_by_side.mp4"), f"{result.num_frames} frames at {result.fps:g} fps\n{notes}"


@one_line_errors
def run_render(motion: str | None, request: gr.Request, progress=gr.Progress()):
    """A motion (.npz or .bvh) -> (maps video, first-frame maps)."""
    from studio.media import VideoWriter
    from studio.motion import load_motion
    from studio.render import iter_map_video_frames

    path = uploaded(motion, "a motion (.npz or .bvh)")
    if path.suffix.lower() not in (".bvh", ".npz"):
        raise StudioError(f"{path.name}: give a motion .npz (from studio pose or studio motion import) or a .bvh")
    refuse_long(path, "motion")
    condition, _ = load_motion(path, body_model())
    if condition.body_model != body_model().name:
        raise StudioError(f"this demo renders motions of the embedded body model; this one is for '{condition.body_model}' (use the CLI)")
    out = session_folder(request)
    maps = ("depth", "normal", "semantic", "skeleton")
    tracker = Tracker(progress)
    tracker.stage("rendering the guidance maps", condition.num_frames)
    with VideoWriter(out / "maps.mp4", fps=condition.fps) as writer:
        for frame in iter_map_video_frames(condition, maps, size=384, body_model=body_model()):
            writer.write(frame)
            tracker.frames(1)
    first = condition[0].render(maps, size=512, body_model=body_model())
    return str(out / "maps.mp4"), [(first[m][0], m) for m in maps]


def _task_options(backend: str, settings: dict | None):
    from studio.tasks import TaskOptions

    return TaskOptions(backend=backend, settings=settings or {})


def _check_backend(task: str, backend: str) -> None:
    from studio.registry import practical_pipelines

    if backend not in practical_pipelines(task):
        raise StudioError(f"the '{backend}' backend cannot run here")


def _notes(out) -> str:
    return "\n".join(f"- {n}" for n in out.notes)


@one_line_errors
def run_avatar_job(reference: str | None, backend: str, request: gr.Request, progress=gr.Progress(), *, settings: dict | None = None):
    """A photo -> (the avatar file for Model3D, an orbit video, notes)."""
    from studio.tasks import run_avatar

    ref = uploaded(reference, "a reference image")
    _check_backend("avatar", backend)
    out = session_folder(request)
    tracker = Tracker(progress)
    result = run_avatar(
        ref, out / "avatar.ply", options=_task_options(backend, settings), body_model=body_model(), preview=out / "orbit.mp4",
        on_stage=tracker.stage, on_frames=tracker.frames,
    )  # fmt: skip
    return str(result.written[0]), str(out / "orbit.mp4"), _notes(result)


@one_line_errors
def run_image_job(prompt: str, pose: str | None, frame: float | None, size: int, backend: str, request: gr.Request, progress=gr.Progress(), *, settings: dict | None = None):
    """A prompt and/or a pose -> (image, maps gallery, notes)."""
    import imageio.v3 as iio

    from studio.tasks import run_image

    pose_path = uploaded(pose, "a pose (.npz)") if pose else None
    _check_backend("image", backend)
    out = session_folder(request)
    tracker = Tracker(progress)
    result = run_image(
        out / "image.png", prompt=prompt, pose=pose_path, options=_task_options(backend, settings), frame=None if frame is None or frame < 0 else int(frame),
        size=validate.integer(size, name="the longer side", low=128, high=MAX_SIZE), maps_out=out / "maps", on_stage=tracker.stage, on_frames=tracker.frames,
    )  # fmt: skip
    gallery = [(iio.imread(p), p.stem) for p in result.written[1:]]
    return str(result.written[0]), gallery, _notes(result)


@one_line_errors
def run_novel_view_job(references: list | None, motion: str | None, orbit: float, backend: str, request: gr.Request, progress=gr.Progress(), *, settings: dict | None = None):
    """Photos (+ a motion) -> (video, notes)."""
    from studio.tasks import run_novel_view

    if not references:
        raise StudioError("add one or more reference photos first")
    refs = [uploaded(r if isinstance(r, str) else r.name, "a reference photo") for r in references]
    mot = uploaded(motion, "a motion") if motion else None
    if mot is not None:
        refuse_long(mot, "motion")
    _check_backend("novel_view", backend)
    out = session_folder(request)
    tracker = Tracker(progress)
    result = run_novel_view(
        refs, out / "novel_view.mp4", options=_task_options(backend, settings), body_model=body_model(), motion=mot,
        orbit=validate.integer(orbit, name="the orbit's frames", low=8, high=240), size=384, on_stage=tracker.stage, on_frames=tracker.frames,
    )  # fmt: skip
    return str(result.written[0]), _notes(result)


@one_line_errors
def run_hoi_job(prompt: str, object_name: str, backend: str, request: gr.Request, progress=gr.Progress(), *, settings: dict | None = None):
    """A sentence (+ an object name) -> (scene for Model3D, image, pose .npz, notes)."""
    from studio.tasks import run_hoi

    _check_backend("hoi", backend)
    out = session_folder(request)
    tracker = Tracker(progress)
    result = run_hoi(
        prompt, out / "scene.glb", options=_task_options(backend, settings), body_model=body_model(), object=(object_name or "").strip() or None,
        image=out / "scene.png", condition=out / "pose.npz", on_stage=tracker.stage, on_frames=tracker.frames,
    )  # fmt: skip
    return str(out / "scene.glb"), str(out / "scene.png"), str(out / "pose.npz"), _notes(result)


# --- the page ----------------------------------------------------------------------------------


def build_app() -> gr.Blocks:
    from studio.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from studio.registry import registered_pipelines

    with gr.Blocks(title="studio", delete_cache=(3600, 3600), analytics_enabled=False) as app:
        gr.Markdown(
            "# studio\nHuman animation from a photo, body guidance from images, videos and mocap: on a CPU, offline. "
            f"Videos and motions up to {MAX_SECONDS:.0f} s; uploads up to {MAX_FILE_SIZE}."
        )
        with gr.Tab("Animate"):
            with gr.Row():
                with gr.Column():
                    reference = reference_image(label="reference (one person, full body works best)", sources=["upload"], height=320)
                    motion = gr.File(label="motion: a video, a .bvh or a motion .npz", file_types=[*VIDEO_SUFFIXES, ".bvh", ".npz"])
                    size = gr.Slider(128, MAX_SIZE, value=512, step=64, label="longer side (pixels)")
                    controls = TaskControls("animate")
                    animate_button = gr.Button("Animate", variant="primary", elem_id="animate-button")
                with gr.Column():
                    result = gr.Video(label="animation", elem_id="animation-video", autoplay=True, loop=True)
                    side_by_side = gr.Video(label="reference | motion | guidance | result", loop=True)
                    animate_notes = gr.Markdown(elem_id="animate-notes")
            gr.Examples(
                examples=[[str(MEDIA / "ref_sitting.jpg"), str(MEDIA / "motion_dribble.mp4")], [str(MEDIA / "ref_sitting.jpg"), str(MEDIA / "cmu_02_03_run.bvh")]],
                inputs=[reference, motion],
                label="examples (one click fills the inputs)",
            )
            controls.bind(animate_button, run_animate, [reference, motion, controls.menu, size], [result, side_by_side, animate_notes], api_name="run_animate")

        with gr.Tab("Pose"):
            with gr.Row():
                with gr.Column():
                    media = gr.File(label="an image or a video of a person", file_types=[*IMAGE_SUFFIXES, *VIDEO_SUFFIXES])
                    hands = gr.Checkbox(value=True, label="hands and face")
                    person = gr.Number(value=-1, precision=0, minimum=-1, label="person to follow when several are in view (-1: the largest)")
                    pose_button = gr.Button("Estimate and fit", variant="primary")
                with gr.Column():
                    preview_image = gr.Image(label="fitted body", visible=True)
                    preview_video = gr.Video(label="fitted body", visible=False)
                    pose_maps = gr.Gallery(label="guidance maps (first frame)", columns=4, height=240)
                    pose_download = gr.File(label="motion.npz (for studio animate / render)")
                    pose_notes = gr.Markdown()
            gr.Examples(examples=[[str(MEDIA / "ref_sitting.jpg")], [str(MEDIA / "motion_dribble.mp4")]], inputs=[media], label="examples")
            pose_button.click(run_pose, [media, hands, person], [preview_image, preview_video, pose_maps, pose_download, pose_notes])

        with gr.Tab("Render"):
            with gr.Row():
                with gr.Column():
                    render_motion = gr.File(label="a motion: .npz or .bvh", file_types=[".npz", ".bvh"])
                    render_button = gr.Button("Render guidance maps", variant="primary")
                with gr.Column():
                    maps_video = gr.Video(label="depth | normal | semantic | skeleton", loop=True)
                    maps_gallery = gr.Gallery(label="first frame", columns=4, height=240)
            gr.Examples(examples=[[str(MEDIA / "cmu_02_03_run.bvh")], [str(ASSETS / "motions" / "walk.npz")]], inputs=[render_motion], label="examples")
            render_button.click(run_render, [render_motion], [maps_video, maps_gallery])

        if registered_pipelines("avatar"):
            with gr.Tab("Avatar"):
                if _unavailable("avatar"):
                    gr.Markdown(_unavailable("avatar"))
                else:
                    with gr.Row():
                        with gr.Column():
                            avatar_ref = reference_image(label="a photo of one person", sources=["upload"], height=320)
                            avatar_controls = TaskControls("avatar")
                            avatar_button = gr.Button("Build the avatar", variant="primary", elem_id="avatar-button")
                        with gr.Column():
                            avatar_model = gr.Model3D(label="avatar (3D Gaussians; drag to turn)", elem_id="avatar-model", height=420)
                            avatar_orbit = gr.Video(label="orbit", loop=True, autoplay=True)
                            avatar_notes = gr.Markdown()
                    gr.Examples(examples=[[str(MEDIA / "ref_sitting.jpg")]], inputs=[avatar_ref], label="example")
                    avatar_controls.bind(avatar_button, run_avatar_job, [avatar_ref, avatar_controls.menu], [avatar_model, avatar_orbit, avatar_notes], api_name="run_avatar")

        if registered_pipelines("image"):
            with gr.Tab("Image"):
                if _unavailable("image"):
                    gr.Markdown(_unavailable("image"))
                else:
                    with gr.Row():
                        with gr.Column():
                            image_prompt = gr.Textbox(label="prompt (may be empty with a pose)", lines=2)
                            image_pose = gr.File(label="pose: a motion .npz (from Pose, studio motion import or studio hoi)", file_types=[".npz"])
                            image_frame = gr.Number(value=-1, precision=0, label="frame of the pose file (-1: its only frame)")
                            image_size = gr.Slider(128, MAX_SIZE, value=512, step=64, label="longer side (pixels)")
                            image_controls = TaskControls("image")
                            image_button = gr.Button("Generate", variant="primary", elem_id="image-button")
                        with gr.Column():
                            image_out = gr.Image(label="image", elem_id="image-out")
                            image_maps = gr.Gallery(label="maps", columns=4, height=240)
                            image_notes = gr.Markdown()
                    image_controls.bind(
                        image_button, run_image_job, [image_prompt, image_pose, image_frame, image_size, image_controls.menu], [image_out, image_maps, image_notes],
                        api_name="run_image",
                    )  # fmt: skip

        if registered_pipelines("novel_view"):
            with gr.Tab("Novel view"):
                if _unavailable("novel_view"):
                    gr.Markdown(_unavailable("novel_view"))
                else:
                    with gr.Row():
                        with gr.Column():
                            nv_refs = gr.File(label="one or more photos of the same person", file_types=list(IMAGE_SUFFIXES), file_count="multiple")
                            nv_motion = gr.File(label="a motion instead of an orbit (optional)", file_types=[*VIDEO_SUFFIXES, ".bvh", ".npz"])
                            nv_orbit = gr.Slider(8, 240, value=60, step=1, label="orbit frames")
                            nv_controls = TaskControls("novel_view")
                            nv_button = gr.Button("Render", variant="primary", elem_id="novel-view-button")
                        with gr.Column():
                            nv_video = gr.Video(label="novel views", loop=True, autoplay=True)
                            nv_notes = gr.Markdown()
                    nv_controls.bind(nv_button, run_novel_view_job, [nv_refs, nv_motion, nv_orbit, nv_controls.menu], [nv_video, nv_notes], api_name="run_novel_view")

        if registered_pipelines("hoi"):
            with gr.Tab("Human + object"):
                if _unavailable("hoi"):
                    gr.Markdown(_unavailable("hoi"))
                else:
                    with gr.Row():
                        with gr.Column():
                            hoi_prompt = gr.Textbox(label='what the person does with what, e.g. "a person sitting on a stool"', lines=2)
                            hoi_object = gr.Textbox(label="object (optional: overrides the one in the sentence)")
                            hoi_controls = TaskControls("hoi")
                            hoi_button = gr.Button("Compose", variant="primary", elem_id="hoi-button")
                        with gr.Column():
                            hoi_model = gr.Model3D(label="scene (drag to turn)", elem_id="hoi-model", height=420)
                            hoi_image = gr.Image(label="rendered")
                            hoi_pose = gr.File(label="pose.npz (for studio render, image, animate)")
                            hoi_notes = gr.Markdown()
                    gr.Examples(
                        examples=[["a person sitting on a stool"], ["a person carrying a box"], ["a person riding a bicycle"], ["a woman lying on a bed"]],
                        inputs=[hoi_prompt], label="examples",
                    )  # fmt: skip
                    hoi_controls.bind(hoi_button, run_hoi_job, [hoi_prompt, hoi_object, hoi_controls.menu], [hoi_model, hoi_image, hoi_pose, hoi_notes], api_name="run_hoi")

        with gr.Tab("Pipelines"):
            gr.Markdown(
                "Generation pipelines registered with studio (the `studio.pipelines` entry points). Put their weights in a folder and "
                "set `STUDIO_WEIGHTS` before starting the app; the Animate tab then offers those that can run here.\n\n" + pipelines_table()
            )
        app.unload(end_session)
    app.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from studio.native_logs import filter_native_stderr

    filter_native_stderr()
    reset_work()
    app = build_app()
    app.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(ASSETS)],
        show_error=True,
    )


if __name__ == "__main__":
    main()
