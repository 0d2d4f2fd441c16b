"""studio as a hostile or careless user meets it: a bad-input corpus built at test time, seeded byte
fuzzing of every valid sample, a read-only folder and a full disk, outputs that alias inputs, and
media that is valid but unusual (CMYK, EXIF orientation, rotated videos, a BVH with a byte-order mark).

Every failure must be one line (usage errors: click's usage block) with exit status 1 (2 for usage
errors), never a traceback or "internal error", and must leave no output and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ASSETS

from studio import cli

MEDIA = ASSETS / "media"
RUN = MEDIA / "cmu_02_03_run.bvh"
WALK = ASSETS / "motions" / "walk.npz"
REF = MEDIA / "ref_sitting.jpg"


def run_cli(capsys, *args) -> tuple[int, str]:
    """The CLI in this process (as ``studio ARGS``): (exit status, what it printed on stderr)."""
    capsys.readouterr()
    code = cli.run([str(a) for a in args])
    return code, capsys.readouterr().err


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files and partial folders studio might have left in ``folder``."""
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name)


# --- the corpus: files made at test time ----------------------------------------------------------


def _bvh(tmp: Path, name: str, edit) -> Path:
    path = tmp / name
    path.write_text(edit(RUN.read_text()))
    return path


def _replace_frame_value(text: str, old: str, new: str) -> str:
    head, motion = text.split("Frame Time:", 1)
    lines = motion.splitlines()
    lines[1] = lines[1].replace(old, new, 1)
    return head + "Frame Time:" + "\n".join(lines) + "\n"


def _condition(tmp: Path, name: str, **changes) -> Path:
    with np.load(WALK) as data:
        arrays = {k: data[k] for k in data.files}
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp / name
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _amass(tmp: Path, name: str, *, frames: int = 30, rate=60.0, poses=None, trans=None) -> Path:
    path = tmp / name
    poses = np.zeros((frames, 156), np.float32) if poses is None else poses
    trans = np.zeros((frames, 3), np.float32) if trans is None else trans
    np.savez(path, poses=poses, trans=trans, mocap_framerate=np.array(rate))
    return path


def _with_k(scale) -> np.ndarray:
    with np.load(WALK) as data:
        K = data["camera_K"].copy()
    K[:, 0, 0] = scale
    return K


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from PIL import Image

    tmp = tmp_path_factory.mktemp("corpus")
    (tmp / "empty.jpg").write_bytes(b"")
    (tmp / "text.jpg").write_text("this is not a picture")
    (tmp / "cut.jpg").write_bytes(REF.read_bytes()[:3000])
    Image.new("RGB", (1, 1)).save(tmp / "dot.png")
    Image.new("1", (20000, 6000)).save(tmp / "huge.png")  # 120 megapixels in a few kB
    (tmp / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "cut.mp4").write_bytes((MEDIA / "motion_dribble.mp4").read_bytes()[:8000])
    (tmp / "text.mov").write_text("moov")
    _bvh(tmp, "nan.bvh", lambda t: _replace_frame_value(t, t.split("Frame Time:")[1].splitlines()[1].split()[3], "nan"))
    _bvh(tmp, "inf_offset.bvh", lambda t: t.replace("OFFSET 1.65674 -1.80282 0.62477", "OFFSET inf -1.80282 0.62477"))
    _bvh(tmp, "bomb.bvh", lambda t: t.replace("Frame Time: .0083333", "Frame Time: 1000"))
    _bvh(tmp, "zero_time.bvh", lambda t: t.replace("Frame Time: .0083333", "Frame Time: 0"))
    _bvh(tmp, "negative_time.bvh", lambda t: t.replace("Frame Time: .0083333", "Frame Time: -0.01"))
    _bvh(tmp, "nan_time.bvh", lambda t: t.replace("Frame Time: .0083333", "Frame Time: nan"))
    _bvh(tmp, "channels.bvh", lambda t: t.replace("CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 2 Zrotation Yrotation", 1))
    _bvh(tmp, "short_line.bvh", lambda t: t.replace("Frame Time: .0083333\n", "Frame Time: .0083333\n0 0 0\n", 1).replace("Frames: 174", "Frames: 175"))
    _bvh(tmp, "zero_frames.bvh", lambda t: t.replace("Frames: 174", "Frames: 0"))
    _bvh(tmp, "negative_frames.bvh", lambda t: t.replace("Frames: 174", "Frames: -5"))
    _bvh(tmp, "many_frames.bvh", lambda t: t.replace("Frames: 174", "Frames: 900000000000"))
    _bvh(tmp, "no_motion.bvh", lambda t: t.split("MOTION")[0])
    (tmp / "binary.bvh").write_bytes(bytes(range(256)) * 20)
    (tmp / "empty.bvh").write_text("")
    _condition(tmp, "nan_pose.npz", body__body_pose=np.full((60, 63), np.nan, np.float32))
    _condition(tmp, "inf_transl.npz", body__transl=np.full((60, 3), np.inf, np.float32))
    _condition(tmp, "zero_focal.npz", camera_K=_with_k(0.0))
    _condition(tmp, "negative_focal.npz", camera_K=_with_k(-500.0))
    _condition(tmp, "nan_focal.npz", camera_K=_with_k(np.nan))
    _condition(tmp, "zero_fps.npz", fps=np.array(0.0))
    _condition(tmp, "nan_fps.npz", fps=np.array(np.nan))
    _condition(tmp, "huge_fps.npz", fps=np.array(1e9))
    _condition(tmp, "text_fps.npz", fps=np.array("thirty"))
    _condition(tmp, "text_pose.npz", body__body_pose=np.array([["x"] * 63] * 60))
    _condition(tmp, "zero_size.npz", image_size=np.array([0, 0]))
    _condition(tmp, "wrong_dims.npz", body__body_pose=np.zeros((60, 62), np.float32))
    _condition(tmp, "no_camera.npz", camera_K=None)
    _condition(tmp, "version.npz", format_version=np.array(99))
    _condition(tmp, "who.npz", body_model=np.array("gorilla"))
    with np.load(WALK) as data:
        arrays = {k: data[k][:0] if k.startswith(("camera_", "body/", "joints3d")) else data[k] for k in data.files}
    np.savez(tmp / "zero_frames.npz", **arrays)
    np.save(tmp / "array.npy", np.zeros(4))
    shutil.copy(tmp / "array.npy", tmp / "renamed.npz")
    (tmp / "text.npz").write_text("PK but not really a zip")
    np.savez(tmp / "pickled.npz", body=np.array([{"a": 1}], dtype=object))
    with zipfile.ZipFile(tmp / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:  # 80 bytes that claim 16 GB
        with archive.open("poses.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 12)})
            member.write(bytes(64))
    _amass(tmp, "amass_nan.npz", poses=np.full((30, 156), np.nan, np.float32))
    _amass(tmp, "amass_inf_trans.npz", trans=np.full((30, 3), np.inf, np.float32))
    _amass(tmp, "amass_rate0.npz", rate=0.0)
    _amass(tmp, "amass_rate_nan.npz", rate=np.nan)
    _amass(tmp, "amass_slow.npz", frames=2000, rate=0.5)  # resampled to 30 fps: 120,000 frames
    _amass(tmp, "amass_shape.npz", poses=np.zeros((30, 100), np.float32))
    _amass(tmp, "amass_empty.npz", frames=0)
    _amass(tmp, "amass_text.npz", poses=np.array([["a"] * 156] * 3))
    (tmp / "folder.npz").mkdir()
    (tmp / "file").write_text("a file, not a folder")
    shutil.copy(WALK, tmp / "walk.npz")
    shutil.copy(RUN, tmp / "run.bvh")
    (tmp / "alias.npz").symlink_to(tmp / "walk.npz")
    os.link(tmp / "walk.npz", tmp / "hardlink.npz")
    (tmp / "dot.gif").write_bytes(b"GIF89a")
    return tmp


# (id, args with {c} for the corpus folder and {o} for a fresh output folder, expected text, exit status)
CORPUS = [
    # 2. valid-looking media that is not
    ("pose-empty-image", "pose {c}/empty.jpg -o {o}/m.npz", "the file is empty", 1),
    ("pose-text-image", "pose {c}/text.jpg -o {o}/m.npz", "not a readable image", 1),
    ("pose-cut-image", "pose {c}/cut.jpg -o {o}/m.npz", "not a readable image", 1),
    ("pose-1x1", "pose {c}/dot.png -o {o}/m.npz", "1x1 pixels", 1),
    ("pose-megapixels", "pose {c}/huge.png -o {o}/m.npz", "megapixels", 1),
    ("pose-noise-video", "pose {c}/noise.mp4 -o {o}/m.npz", "not a readable video", 1),
    ("pose-empty-video", "pose {c}/empty.mp4 -o {o}/m.npz", "the file is empty", 1),
    ("pose-text-mov", "pose {c}/text.mov -o {o}/m.npz", "not a readable video", 1),
    ("pose-missing", "pose {c}/nothing.jpg -o {o}/m.npz", "no such file", 1),
    ("pose-gif", "pose {c}/dot.gif -o {o}/m.npz", "unsupported input", 1),
    ("animate-text-reference", "animate {c}/text.jpg {c}/run.bvh -o {o}/a.mp4", "not a readable image", 1),
    ("animate-noise-motion", f"animate {REF} {{c}}/noise.mp4 -o {{o}}/a.mp4", "not a readable video", 1),
    ("animate-txt-motion", f"animate {REF} {{c}}/file -o {{o}}/a.mp4", "unsupported motion", 1),
    # 3. impossible numbers, in files and options
    ("import-bvh-nan", "motion import {c}/nan.bvh -o {o}/m.npz", "NaN or infinite", 1),
    ("import-bvh-inf-offset", "motion import {c}/inf_offset.bvh -o {o}/m.npz", "NaN or infinite", 1),
    ("import-bvh-zero-time", "motion import {c}/zero_time.bvh -o {o}/m.npz", "Frame Time must be", 1),
    ("import-bvh-negative-time", "motion import {c}/negative_time.bvh -o {o}/m.npz", "Frame Time must be", 1),
    ("import-bvh-nan-time", "motion import {c}/nan_time.bvh -o {o}/m.npz", "Frame Time must be", 1),
    ("import-bvh-channels", "motion import {c}/channels.bvh -o {o}/m.npz", "CHANNELS announce", 1),
    ("import-bvh-short-line", "motion import {c}/short_line.bvh -o {o}/m.npz", "CHANNELS announce", 1),
    ("import-bvh-zero-frames", "motion import {c}/zero_frames.bvh -o {o}/m.npz", "has no frames", 1),
    ("import-bvh-negative-frames", "motion import {c}/negative_frames.bvh -o {o}/m.npz", "has no frames", 1),
    ("import-bvh-many-frames", "motion import {c}/many_frames.bvh -o {o}/m.npz", "at most 36,000", 1),
    ("import-bvh-no-motion", "motion import {c}/no_motion.bvh -o {o}/m.npz", "not a valid BVH", 1),
    ("import-bvh-binary", "motion import {c}/binary.bvh -o {o}/m.npz", "not a valid BVH", 1),
    ("import-bvh-empty", "motion import {c}/empty.bvh -o {o}/m.npz", "the file is empty", 1),
    ("render-nan-pose", "render {c}/nan_pose.npz -o {o}/r.mp4", "NaN or infinite", 1),
    ("render-inf-transl", "render {c}/inf_transl.npz -o {o}/r.mp4", "NaN or infinite", 1),
    ("render-zero-focal", "render {c}/zero_focal.npz -o {o}/r.mp4", "focal length fx", 1),
    ("render-negative-focal", "render {c}/negative_focal.npz -o {o}/r.mp4", "focal length fx", 1),
    ("render-nan-focal", "render {c}/nan_focal.npz -o {o}/r.mp4", "NaN or infinite", 1),
    ("render-zero-fps", "render {c}/zero_fps.npz -o {o}/r.mp4", "fps must be", 1),
    ("render-nan-fps", "render {c}/nan_fps.npz -o {o}/r.mp4", "NaN or infinite", 1),
    ("render-huge-fps", "render {c}/huge_fps.npz -o {o}/r.mp4", "fps must be", 1),
    ("render-text-fps", "render {c}/text_fps.npz -o {o}/r.mp4", "must hold numbers", 1),
    ("render-text-pose", "render {c}/text_pose.npz -o {o}/r.mp4", "must hold numbers", 1),
    ("render-zero-size", "render {c}/zero_size.npz -o {o}/r.mp4", "image_size", 1),
    ("render-wrong-dims", "render {c}/wrong_dims.npz -o {o}/r.mp4", "must be [T, 63]", 1),
    ("render-no-camera", "render {c}/no_camera.npz -o {o}/r.mp4", "missing entry 'camera_K'", 1),
    ("render-version", "render {c}/version.npz -o {o}/r.mp4", "format version 99", 1),
    ("render-unknown-body", "render {c}/who.npz -o {o}/r.mp4", "unknown body model", 1),
    ("render-zero-frames", "render {c}/zero_frames.npz -o {o}/r.mp4", "has no frames", 1),
    ("render-npy-renamed", "render {c}/renamed.npz -o {o}/r.mp4", "single .npy array renamed", 1),
    ("render-text-npz", "render {c}/text.npz -o {o}/r.mp4", "not a readable", 1),
    ("render-pickle", "render {c}/pickled.npz -o {o}/r.mp4", "Python objects", 1),
    ("import-amass-nan", "motion import {c}/amass_nan.npz -o {o}/m.npz", "NaN or infinite", 1),
    ("import-amass-inf-trans", "motion import {c}/amass_inf_trans.npz -o {o}/m.npz", "NaN or infinite", 1),
    ("import-amass-rate0", "motion import {c}/amass_rate0.npz -o {o}/m.npz", "'mocap_framerate' must be", 1),
    ("import-amass-rate-nan", "motion import {c}/amass_rate_nan.npz -o {o}/m.npz", "NaN or infinite", 1),
    ("import-amass-shape", "motion import {c}/amass_shape.npz -o {o}/m.npz", "[T, 156]", 1),
    ("import-amass-empty", "motion import {c}/amass_empty.npz -o {o}/m.npz", "no frames", 1),
    ("import-amass-text", "motion import {c}/amass_text.npz -o {o}/m.npz", "must hold numbers", 1),
    ("import-npy-renamed", "motion import {c}/renamed.npz -o {o}/m.npz", "single .npy array renamed", 1),
    ("option-fps-negative", "motion import {c}/run.bvh -o {o}/m.npz --fps -1", "--fps must be", 1),
    ("option-fps-nan", "motion import {c}/run.bvh -o {o}/m.npz --fps nan", "--fps must be", 1),
    ("option-up", "motion import {c}/run.bvh -o {o}/m.npz --up sideways", "--up must be one of auto, y, z", 1),
    ("option-size-zero", "motion import {c}/run.bvh -o {o}/m.npz --size 0x0", "--size height must be", 1),
    ("option-size-text", "motion import {c}/run.bvh -o {o}/m.npz --size big", "--size must look like", 1),
    ("option-focal-zero", "pose {c}/text.jpg -o {o}/m.npz --focal 0", "--focal must be", 1),
    ("option-focal-negative", "pose {c}/text.jpg -o {o}/m.npz --focal -300", "--focal must be", 1),
    ("option-focal-nan", "pose {c}/text.jpg -o {o}/m.npz --focal nan", "--focal must be", 1),
    ("option-render-size-zero", "render {c}/walk.npz -o {o}/r.mp4 --size 0", "--size must be", 1),
    ("option-render-size-huge", "render {c}/walk.npz -o {o}/r.mp4 --size 100000", "--size must be", 1),
    ("option-animate-size", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --size 10", "--size must be", 1),
    ("option-pipeline-setting-range", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --set supersample=0", "supersample must be 1-4", 1),
    ("option-pipeline-setting-type", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --set supersample=two", "expected a whole number", 1),
    ("option-pipeline-setting-unknown", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --set steps=3", "unknown setting 'steps' for the mesh pipeline", 1),
    ("option-pipeline-setting-form", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --set supersample", "--set takes key=value", 1),
    # 4. resource bombs: refused before allocating
    ("bomb-bvh-frame-time", "motion import {c}/bomb.bvh -o {o}/m.npz", "Frame Time must be", 1),
    ("bomb-fps-option", "motion import {c}/run.bvh -o {o}/m.npz --fps 1e9", "--fps must be", 1),
    ("bomb-amass-resample", "motion import {c}/amass_slow.npz -o {o}/m.npz", "at most 36,000", 1),
    ("bomb-npz-arrays", "motion import {c}/bomb.npz -o {o}/m.npz", "would take over 2 GB", 1),
    ("bomb-animate-bvh", f"animate {REF} {{c}}/bomb.bvh -o {{o}}/a.mp4", "Frame Time must be", 1),
    # 5. outputs that clobber inputs or each other
    ("alias-import-output-is-input", "motion import {c}/walk.npz -o {c}/walk.npz", "would overwrite the input", 1),
    ("alias-symlink", "motion import {c}/walk.npz -o {c}/alias.npz", "would overwrite the input", 1),
    ("alias-hard-link", "motion import {c}/walk.npz -o {c}/hardlink.npz", "would overwrite the input", 1),
    ("alias-animate-output-is-motion", f"animate {REF} {MEDIA}/motion_dribble.mp4 -o {MEDIA}/motion_dribble.mp4", "would overwrite the input", 1),
    ("alias-guidance-is-output", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --guidance-out {{o}}/a.mp4", "are the same file", 1),
    ("alias-side-by-side-is-output", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --side-by-side {{o}}/a.mp4", "are the same file", 1),
    ("alias-preview-is-input", f"pose {MEDIA}/motion_dribble.mp4 -o {{o}}/m.npz --preview {MEDIA}/motion_dribble.mp4", "would overwrite the input", 1),
    ("alias-render-dir-input", "render {c}/walk.npz -o {c}/walk.npz/", "is a file", 1),
    # 7. user mistakes that are not internal errors
    ("output-is-folder", "motion import {c}/run.bvh -o {c}/folder.npz", "is a folder", 1),
    ("output-trailing-slash", "motion import {c}/run.bvh -o {o}/m.npz/", "not a folder", 1),
    ("output-parent-is-file", "motion import {c}/run.bvh -o {c}/file/m.npz", "is a file, not a folder", 1),
    ("render-dir-is-file", "render {c}/walk.npz -o {c}/file/", "is a file", 1),
    ("render-output-suffix", "render {c}/walk.npz -o {o}/r.gif", "must end in", 1),
    ("animate-output-suffix", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.avi", "must end in", 1),
    ("pose-output-suffix", f"pose {REF} -o {{o}}/m.json", "must end in .npz", 1),
    ("export-output-suffix", "motion export {c}/walk.npz -o {o}/m.txt", "must end in .bvh", 1),
    ("animate-backend", f"animate {REF} {{c}}/run.bvh -o {{o}}/a.mp4 --backend magic", "unknown backend", 1),
    ("usage-mistyped-option", "render {c}/walk.npz -o {o}/r.mp4 --sizee 3", "No such option", 2),
    ("usage-non-numeric", "render {c}/walk.npz -o {o}/r.mp4 --size abc", "Invalid value for '--size'", 2),
    ("usage-missing-output", "render {c}/walk.npz", "Missing option", 2),
    ("usage-unknown-command", "rendr {c}/walk.npz", "No such command", 2),
]


@pytest.mark.parametrize("case, args, expected, status", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_corpus(corpus, tmp_path, capsys, case, args, expected, status):
    out = tmp_path / "out"
    out.mkdir()
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}
    code, err = run_cli(capsys, *args.format(c=corpus, o=out).split())
    assert code == status, err
    assert "Traceback" not in err and "internal error" not in err, err
    if expected is not None:
        assert expected in err, err
    if status == 1:
        assert len(err.strip().splitlines()) == 1, err
    if status != 0:
        assert not any(out.iterdir()), list(out.iterdir())  # nothing written, not even a temporary file
    assert not leftovers(corpus)
    after = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}
    assert after == before  # no input was touched


def test_corpus_is_large_and_covers_every_command():
    assert len(CORPUS) >= 60
    commands = {args.split()[0] if args.split()[0] != "motion" else " ".join(args.split()[:2]) for _, args, _, _ in CORPUS}
    assert {"pose", "animate", "render", "motion import", "motion export"} <= commands


# --- valid media that used to be misread -----------------------------------------------------------


def test_cmyk_and_exif_rotated_photos_read_upright(tmp_path):
    from PIL import Image

    from studio.media import read_image

    upright = read_image(REF)
    with Image.open(REF) as im:
        im.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
        exif = im.getexif()
        exif[0x0112] = 6  # "rotate 90 CW to display": the stored pixels are turned the other way
        im.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", exif=exif, quality=95)
        Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257)).save(tmp_path / "grey16.png")
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == upright.shape and np.abs(cmyk.astype(int) - upright).mean() < 6  # not white
    phone = read_image(tmp_path / "phone.jpg")
    assert phone.shape == upright.shape and np.abs(phone.astype(int) - upright).mean() < 6
    grey = read_image(tmp_path / "grey16.png")
    assert grey.dtype == np.uint8 and abs(float(grey.mean()) - float(upright.mean(axis=2).mean())) < 3


def test_video_with_rotation_metadata_reads_as_displayed(tmp_path):
    import imageio_ffmpeg

    from studio.media import VideoReader

    rotated = tmp_path / "rotated.mp4"
    src = MEDIA / "motion_dribble.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(src), "-c", "copy", str(rotated)], check=True)
    plain, turned = VideoReader(src, max_side=320), VideoReader(rotated, max_side=320)
    assert plain.info.size == (1920, 1080) and turned.info.size == (1080, 1920)
    assert turned.size == (180, 320) and plain.size == (320, 180)
    a, b = next(iter(plain)), next(iter(turned))
    # display_rotation 90 is counter-clockwise: the displayed frame is the stored one turned left
    assert np.abs(np.rot90(a).astype(int) - b).mean() < 12


def test_bvh_with_a_byte_order_mark_reads_like_without(tmp_path, anny):
    from studio.motion import import_motion

    bom = tmp_path / "bom.bvh"
    bom.write_bytes(b"\xef\xbb\xbf" + RUN.read_bytes())
    a, b = import_motion(RUN, anny), import_motion(bom, anny)
    assert a.num_frames == b.num_frames and np.allclose(a.body["body_pose"], b.body["body_pose"])


def test_bvh_with_more_lines_than_frames_reads_the_announced_frames(tmp_path):
    from studio.motion import read_bvh

    extra = tmp_path / "extra.bvh"
    text = RUN.read_text()
    extra.write_text(text + text.splitlines()[-1] + "\n")
    assert read_bvh(extra).motion.shape[0] == 174


# --- outputs: aliasing, publishing together, stale temporary files -----------------------------------


def test_a_failing_side_output_publishes_nothing(tmp_path, capsys, monkeypatch):
    """animate's main output is complete when --side-by-side fails: neither may be left in place."""
    import studio.animate.job as job_module

    def broken(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "sbs.mp4"))

    monkeypatch.setattr(job_module, "_write_side_by_side", broken)
    code, err = run_cli(capsys, "animate", REF, RUN, "-o", tmp_path / "a.mp4", "--side-by-side", tmp_path / "sbs.mp4", "--size", "128")
    assert code == 1 and "no space left on the device holding" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "a.json").exists() and not (tmp_path / "sbs.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert (tmp_path / "a.mp4.partial").is_dir()  # the rendered chunks stay for --resume
    monkeypatch.undo()
    code, err = run_cli(capsys, "animate", REF, RUN, "-o", tmp_path / "a.mp4", "--side-by-side", tmp_path / "sbs.mp4", "--size", "128", "--resume")
    assert code == 0, err
    assert "resumed" in err and (tmp_path / "a.mp4").is_file() and (tmp_path / "sbs.mp4").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.mp4", "sbs.mp4"]


def test_temporary_files_of_killed_runs_are_swept(tmp_path, capsys):
    stale = tmp_path / ".r.mp4.999999999-0123abcd.partial.mp4"  # no process has this id
    stale.write_bytes(b"half a video")
    alive = tmp_path / f".r.mp4.{os.getpid()}-0123abcd.partial.mp4"  # this process: not stale
    alive.write_bytes(b"in progress")
    code, err = run_cli(capsys, "render", WALK, "-o", tmp_path / "r.mp4", "--size", "64", "--maps", "mask")
    assert code == 0, err
    assert not stale.exists() and alive.exists()
    inside = tmp_path / "maps" / ".mask_00000.png.999999999-0123abcd.partial.png"  # left in an output folder
    inside.parent.mkdir()
    inside.write_bytes(b"half a picture")
    code, err = run_cli(capsys, "render", WALK, "-o", f"{tmp_path}/maps/", "--size", "64", "--maps", "mask")
    assert code == 0, err
    assert not inside.exists() and len(list((tmp_path / "maps").glob("mask_*.png"))) == 60


def test_render_to_a_folder_publishes_all_files_or_none(tmp_path, capsys, monkeypatch):
    import studio.render as render_module

    real = render_module.GuidanceRenderer.iter_render

    def fail_after_one_chunk(self, *args, **kwargs):
        for i, chunk in enumerate(real(self, *args, **kwargs)):
            if i == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            yield chunk

    monkeypatch.setattr(render_module.GuidanceRenderer, "iter_render", fail_after_one_chunk)
    code, err = run_cli(capsys, "render", WALK, "-o", f"{tmp_path}/maps/", "--size", "64", "--maps", "mask")
    assert code == 1 and "no space left" in err, err
    assert not (tmp_path / "maps").exists()  # the folder it made is gone again, with no PNG in it


# --- the environment: a read-only folder and a full disk ----------------------------------------------


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A tmpfs at ``path`` (mounting needs root and a kernel that allows it); yields False where it cannot."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield False
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    with mounted_tmpfs(folder, "ro,size=1m") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("cannot make a read-only folder: not allowed to mount, and root ignores permissions")
            folder.chmod(0o555)
        code, err = run_cli(capsys, "motion", "import", RUN, "-o", folder / "m.npz")
        assert code == 1, err
        assert f"cannot write {folder}" in err and ("read-only" in err or "permission denied" in err), err
        assert ".partial" not in err and len(err.strip().splitlines()) == 1
        assert list(folder.iterdir()) == []


def test_full_disk(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "full"
    with mounted_tmpfs(folder, "size=256k") as mounted:
        if not mounted:  # inject the error the encoder would meet
            import studio.media as media

            real_write = media.VideoWriter.write

            def write(self, frame):
                if self.frames_written == 3:
                    raise OSError(errno.ENOSPC, "No space left on device", str(self._tmp))
                real_write(self, frame)

            monkeypatch.setattr(media.VideoWriter, "write", write)
        code, err = run_cli(capsys, "render", WALK, "-o", folder / "maps.mp4", "--size", "512")
        assert code == 1, err
        assert f"no space left on the device holding {folder}" in err and len(err.strip().splitlines()) == 1, err
        assert list(folder.iterdir()) == []
        code, err = run_cli(capsys, "motion", "import", RUN, "-o", tmp_path / "ok.npz")
        assert code == 0 and (tmp_path / "ok.npz").is_file()  # other folders are unaffected


# --- fuzzing: byte mutations of every valid sample -----------------------------------------------------


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for k in range(count):
        b = bytearray(data)
        kind = k % 4
        if kind == 0:  # flip bytes
            for _ in range(rng.randint(1, 20)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1:  # truncate
            b = b[: rng.randrange(1, len(b))]
        elif kind == 2:  # a block of junk in the middle
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        else:  # repeat a block
            at, n = rng.randrange(len(b)), rng.randint(1, 500)
            b[at:at] = b[at : at + n]
        out.append(bytes(b))
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """One small valid file per kind, with the command that reads it."""
    from PIL import Image

    from studio.media import VideoReader, VideoWriter

    tmp = tmp_path_factory.mktemp("samples")
    with Image.open(REF) as im:
        im.resize((240, 160)).save(tmp / "ref.jpg", quality=90)
        im.resize((240, 160)).save(tmp / "ref.png")
    with VideoWriter(tmp / "clip.mp4", fps=12) as writer:
        for i, frame in enumerate(VideoReader(MEDIA / "motion_dribble.mp4", max_side=256)):
            if i == 6:
                break
            writer.write(frame)
    lines = RUN.read_text().splitlines()
    (tmp / "run.bvh").write_text("\n".join(lines[:187] + lines[187:207]).replace("Frames: 174", "Frames: 20") + "\n")
    shutil.copy(WALK, tmp / "walk.npz")
    _amass(tmp, "amass.npz", frames=12, rate=30.0)
    return {
        "jpg": (tmp / "ref.jpg", ["pose", "{f}", "-o", "{o}/m.npz", "--no-hands"]),
        "png": (tmp / "ref.png", ["pose", "{f}", "-o", "{o}/m.npz", "--no-hands"]),
        "mp4": (tmp / "clip.mp4", ["pose", "{f}", "-o", "{o}/m.npz"]),
        "bvh": (tmp / "run.bvh", ["motion", "import", "{f}", "-o", "{o}/m.npz"]),
        "npz": (tmp / "walk.npz", ["render", "{f}", "-o", "{o}/r.mp4", "--size", "64", "--maps", "mask"]),
        "amass": (tmp / "amass.npz", ["motion", "import", "{f}", "-o", "{o}/m.npz"]),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["jpg", "png", "mp4", "bvh", "npz", "amass"])
def test_fuzzed_files_never_crash(samples, tmp_path, capsys, kind):
    sample, command = samples[kind]
    rng = random.Random(f"studio-fuzz-{kind}")
    data = sample.read_bytes()
    code, err = run_cli(capsys, *[a.format(f=sample, o=tmp_path) for a in command])
    assert code == 0, f"the unmutated {kind} sample must work: {err}"
    for i, mutated in enumerate(_mutations(data, rng, 8)):
        path = tmp_path / f"m{i}{sample.suffix}"
        path.write_bytes(mutated)
        out = tmp_path / f"out{i}"
        out.mkdir()
        code, err = run_cli(capsys, *[a.format(f=path, o=out) for a in command])
        assert code in (0, 1), f"mutation {i} of {kind}: {err}"
        assert "Traceback" not in err and "internal error" not in err, f"mutation {i} of {kind}: {err}"
        if code == 1:
            assert len(err.strip().splitlines()) == 1 and not any(out.iterdir()), f"mutation {i} of {kind}: {err}"
        assert not leftovers(out)


@pytest.mark.slow
@pytest.mark.parametrize("suffix, codec", [(".webm", "libvpx-vp9"), (".avi", "mjpeg")])
def test_the_video_types_the_web_demo_offers_are_read(samples, tmp_path, capsys, suffix, codec):
    import imageio_ffmpeg

    clip = tmp_path / f"clip{suffix}"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(samples["mp4"][0]), "-c:v", codec, str(clip)], check=True)
    code, err = run_cli(capsys, "pose", clip, "-o", tmp_path / "m.npz")
    assert code == 0, err
    assert "6 frames" in err


def test_the_web_demo_empties_its_work_folder_on_start(tmp_path, monkeypatch):
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT))
    import gradio_app

    monkeypatch.setattr(gradio_app, "WORK", tmp_path / "work")
    stale = tmp_path / "work" / "0123" / "job" / ".animation.mp4.12-ab.partial.mp4"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a killed server")
    gradio_app.reset_work()
    assert (tmp_path / "work").is_dir() and not any((tmp_path / "work").iterdir())
