"""The built-in synthetic action dataset: short mp4 clips whose class is only in the frame ORDER.

Ten of the eleven classes come in pairs whose clips show the same frames in opposite
order (moving_left/moving_right, moving_up/moving_down, rotating_cw/rotating_ccw,
growing/shrinking, appearing/disappearing); the eleventh, ``static``, has a main object
that stays put. A clip of one class of a pair is rendered exactly like a clip of the
other and then reversed in time, so the two classes have identical distributions of
frames: a model that averages per-frame predictions (TSN) cannot beat chance within a
pair, and a temporal model (TSM) can. That gap is what this dataset measures.
The one asymmetry left is the codec's: MPEG-4 predicts each frame from the one before,
so its artefacts are not time-symmetric (the time-averaged frame of a clip encoded
forwards and backwards differs by ~0.75 grey levels in 255), and OpenCV's writer has no
intra-only mode for mp4v. Tests compare the rendered frames, before encoding.

Nothing in a single frame gives the class away: textured random backgrounds, random
shapes, colours, sizes, speeds and positions, and smaller distractor shapes bouncing in
random directions (a bouncing path reversed is another bouncing path, so distractors are
time-symmetric and carry no label). The main object is larger than any distractor and
wears an off-centre marker dot so that its rotation is visible whatever its shape.

Output layout (UCF101 style, MMAction2 lists)::

    DIR/classes.txt           class names, index = line number
    DIR/train.txt, val.txt    "relative/path.mp4 label" per line
    DIR/<class>/<class>_NNN.mp4
    DIR/synth.json            generator parameters, for provenance

Torch-free: numpy and OpenCV only.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgevid.data.video_io import read_frames, write_video
from edgevid.errors import EdgevidError
from edgevid.manifest import MAX_CROP, MAX_FRAMES

GENERATOR_VERSION = 1  # bump when rendering changes, so datasets on disk can be told apart
MARKER = "synth.json"  # generator parameters; also marks a folder `data synth --force` may replace

ORDER_PAIRS: list[tuple[str, str]] = [
    ("moving_left", "moving_right"),
    ("moving_up", "moving_down"),
    ("rotating_cw", "rotating_ccw"),
    ("growing", "shrinking"),
    ("appearing", "disappearing"),
]
CLASSES: tuple[str, ...] = tuple(name for pair in ORDER_PAIRS for name in pair) + ("static",)

# class -> (motion rendered forward in time, whether the clip is then reversed). Each pair
# shares one motion; its second class is the first one played backwards.
_MOTION: dict[str, tuple[str, bool]] = {
    "moving_right": ("move_x", False),
    "moving_left": ("move_x", True),
    "moving_down": ("move_y", False),  # image y grows downwards
    "moving_up": ("move_y", True),
    "rotating_cw": ("rotate", False),  # angle grows = clockwise on screen (y down)
    "rotating_ccw": ("rotate", True),
    "growing": ("scale", False),
    "shrinking": ("scale", True),
    "appearing": ("fade", False),
    "disappearing": ("fade", True),
    "static": ("static", False),
}
SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")
_SUBPIXEL = 4  # cv2 drawing with fractional coordinates: 2**4 sub-steps per pixel


@dataclass(frozen=True)
class ClipMeta:
    """Ground truth of one rendered clip, per frame and in the clip's (output) time order."""

    label: str
    shape: str
    centre: np.ndarray  # (F, 2) main object centre, x and y in pixels
    angle: np.ndarray  # (F,) orientation in degrees, growing = clockwise on screen
    radius: np.ndarray  # (F,) size in pixels
    alpha: np.ndarray  # (F,) opacity 0..1
    distractors: int


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate_dataset`` wrote."""

    root: Path
    classes: tuple[str, ...]
    train: int
    val: int
    seconds: float


# ---------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random static texture: smooth colour blobs, faint stripes and fine grain (uint8 HxWx3)."""
    grid = int(rng.integers(3, 9))
    blobs = cv2.resize(
        rng.uniform(40, 215, (grid, grid, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta, freq = rng.uniform(0, np.pi), rng.uniform(2, 8)
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(-1, 1, 3).astype(np.float32)
    grain = rng.normal(0, 3, (size, size, 3)).astype(np.float32)
    texture = blobs + rng.uniform(5, 25) * stripes[..., None] * tint + grain
    return np.clip(np.round(texture), 0, 255).astype(np.uint8)


def _polygon(shape: str, centre: np.ndarray, radius: float, angle: float, aspect: float) -> np.ndarray:
    """Outline points of a shape (circle as a 32-gon), rotated by ``angle`` degrees."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "rectangle":
        pts = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], np.float64)
    else:  # triangle
        t = np.deg2rad([0, 120, 240])
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return centre + radius * pts @ rot.T


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SUBPIXEL)).astype(np.int32)


def _draw(
    frame: np.ndarray,
    shape: str,
    centre: np.ndarray,
    radius: float,
    angle: float,
    aspect: float,
    colour: np.ndarray,
    outline: np.ndarray | None = None,
    marker: np.ndarray | None = None,
) -> None:
    """Draw a filled shape (with optional outline and orientation marker) in place, anti-aliased."""
    poly = _fixed(_polygon(shape, centre, radius, angle, aspect))
    cv2.fillPoly(frame, [poly], colour.tolist(), cv2.LINE_AA, _SUBPIXEL)
    if outline is not None:
        thickness = max(1, round(radius / 8))
        cv2.polylines(frame, [poly], True, outline.tolist(), thickness, cv2.LINE_AA, _SUBPIXEL)
    if marker is not None:
        a = np.deg2rad(angle)
        spot = centre + 0.5 * radius * np.array([np.cos(a), np.sin(a)])
        cv2.circle(
            frame,
            tuple(_fixed(spot).tolist()),
            int(0.22 * radius * (1 << _SUBPIXEL)),
            marker.tolist(),
            -1,
            cv2.LINE_AA,
            _SUBPIXEL,
        )


def _bounce(start: np.ndarray, velocity: np.ndarray, frames: int, low: float, high: float) -> np.ndarray:
    """Positions of a point moving at constant velocity, reflected off the walls [low, high]."""
    raw = start + np.arange(frames)[:, None] * velocity - low
    span = high - low
    folded = np.mod(raw, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def _contrasting(rng: np.random.Generator, against: np.ndarray, min_distance: float = 120.0) -> np.ndarray:
    """A random colour at least ``min_distance`` (L1) from ``against``, best of a few draws."""
    best, best_d = None, -1.0
    for _ in range(8):
        c = rng.uniform(0, 255, 3)
        d = float(np.abs(c - against).sum())
        if d > best_d:
            best, best_d = c, d
        if d >= min_distance:
            break
    return np.asarray(best)


def _main_track(
    motion: str, rng: np.random.Generator, size: int, frames: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-time trajectory of the main object: centre (F, 2), angle, radius, alpha (F,)."""
    t = np.linspace(0.0, 1.0, frames)
    ones = np.ones(frames)
    radius = rng.uniform(0.10, 0.15) * size * ones
    angle = rng.uniform(0, 360) * ones
    alpha = ones.copy()
    if motion == "scale":
        radius = rng.uniform(0.06, 0.08) * size * rng.uniform(1.8, 2.6) ** t
    elif motion == "rotate":
        angle = angle + rng.uniform(100, 240) * t  # <= 16 deg/frame at 16 frames: unambiguous
    elif motion == "fade":
        start = rng.uniform(0.0, 0.35)
        ramp = (t - start) / rng.uniform(0.3, 0.6)
        alpha = np.clip(ramp, 0, 1) ** 2 * (3 - 2 * np.clip(ramp, 0, 1))  # smoothstep
    r_max = float(radius.max())
    if motion in ("move_x", "move_y"):
        travel = rng.uniform(0.30, 0.55) * size
        drift = rng.uniform(-0.08, 0.08) * size  # a little sideways motion, either sign
        along0 = rng.uniform(r_max, size - r_max - travel)
        across0 = rng.uniform(r_max + abs(drift), size - r_max - abs(drift))
        along, across = along0 + travel * t, across0 + drift * t
        centre = np.stack([along, across] if motion == "move_x" else [across, along], 1)
    else:
        # Non-moving classes drift slightly in a random direction, so "any motion" is not a
        # shortcut for "not static".
        drift = rng.uniform(0, 0.06) * size * np.array([np.cos(d := rng.uniform(0, 2 * np.pi)), np.sin(d)])
        start = rng.uniform(r_max + np.abs(drift), size - r_max - np.abs(drift))
        centre = start + t[:, None] * drift
    return centre, angle, radius, alpha


def render_clip(
    label: str, rng: np.random.Generator, size: int = 112, frames: int = 16
) -> tuple[np.ndarray, ClipMeta]:
    """Render one clip of class ``label`` as (F, size, size, 3) uint8 BGR frames, plus its ground truth.

    The two classes of an order pair draw the same random numbers, so with generators in
    the same state they return the same frames in opposite time order.
    """
    if label not in _MOTION:
        raise ValueError(f"unknown synthetic class {label!r}; classes are {', '.join(CLASSES)}")
    motion, backwards = _MOTION[label]
    background = _background(rng, size)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    aspect = rng.uniform(0.5, 0.8)
    centre, angle, radius, alpha = _main_track(motion, rng, size, frames)
    fill = _contrasting(rng, background.mean((0, 1)))
    outline = np.full(3, 20.0 if fill.mean() > 128 else 235.0)
    marker = outline  # contrasts with the fill by construction

    distractors = []
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.04, 0.08) * size
        speed, heading = rng.uniform(0.005, 0.03) * size, rng.uniform(0, 2 * np.pi)
        path = _bounce(
            rng.uniform(r, size - r, 2),
            speed * np.array([np.cos(heading), np.sin(heading)]),
            frames,
            r,
            size - r,
        )
        distractors.append(
            (
                SHAPES[int(rng.integers(len(SHAPES)))],
                path,
                r,
                rng.uniform(0, 360),
                rng.uniform(0.5, 0.9),
                rng.uniform(0, 255, 3),
            )
        )

    out = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        frame = background.copy()
        for d_shape, path, r, d_angle, d_aspect, colour in distractors:
            _draw(frame, d_shape, path[i], r, d_angle, d_aspect, colour)
        if alpha[i] > 0:
            # Drawn on uint8 (OpenCV anti-aliases only 8-bit images), then blended for the fade.
            drawn = frame.copy()
            _draw(drawn, shape, centre[i], radius[i], angle[i], aspect, fill, outline, marker)
            if alpha[i] < 1:
                mix = frame.astype(np.float32) + np.float32(alpha[i]) * (drawn.astype(np.float32) - frame)
                drawn = np.clip(np.round(mix), 0, 255).astype(np.uint8)
            frame = drawn
        out[i] = frame

    if backwards:
        out, centre, angle, radius, alpha = (a[::-1].copy() for a in (out, centre, angle, radius, alpha))
    return out, ClipMeta(label, shape, centre, angle, radius, alpha, len(distractors))


def embed_in_still(clip: np.ndarray, before: int, after: int, noise: float, drift: float,
                   rng: np.random.Generator) -> np.ndarray:
    """``clip`` with ``before`` / ``after`` still frames (its first / last frame held), camera noise and drift.

    What an edge camera sees: a static scene, an action, static again. ``noise``: Gaussian
    sensor noise (grey levels, per pixel and frame); ``drift``: a slow brightness change of
    the whole picture, in grey levels per frame (lighting), over the whole video.
    """
    frames = np.concatenate([np.repeat(clip[:1], before, 0), clip, np.repeat(clip[-1:], after, 0)]).astype(np.float32)
    if drift:
        frames += (drift * np.arange(len(frames), dtype=np.float32))[:, None, None, None]
    if noise:
        frames += rng.normal(0.0, noise, frames.shape).astype(np.float32)
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def clip_rng(seed: int, class_index: int, video_index: int) -> np.random.Generator:
    """The random generator of one video: independent per (seed, class, video), order-free."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(class_index, video_index)))


# ---------------------------------------------------------------- dataset writing

# Bounds of what one run may ask for: far above a real use, far below what exhausts a machine.
# Frames per video and frame size share the manifest's ceilings (what a model could ever take).
MAX_VIDEOS_PER_CLASS = 100_000
MAX_STILL = 10_000  # still frames on either side of an action
_MPEG4_MAX_TIMEBASE = 65535  # MPEG-4 part 2 stores the time base denominator in 16 bits
_LOW_DISK = 1 << 20  # free bytes under which a failed write is taken for a full disk


def _check_args(videos_per_class: int, frames: int, size: int, val_fraction: float, fps: float,
                still: tuple[int, int], noise: float, drift: float) -> None:
    """Refuse a parameter out of range (the CLI's types check the same at parse time)."""
    if not 2 <= videos_per_class <= MAX_VIDEOS_PER_CLASS:
        raise EdgevidError(f"--videos-per-class must be between 2 and {MAX_VIDEOS_PER_CLASS}, got {videos_per_class}")
    if not 4 <= frames <= MAX_FRAMES:
        raise EdgevidError(f"--frames must be between 4 (order needs a few frames) and {MAX_FRAMES}, got {frames}")
    if not 32 <= size <= MAX_CROP or size % 2:
        # MPEG-4 needs even frame sizes; below 32 px the shapes are a few pixels.
        raise EdgevidError(f"--size must be an even number between 32 and {MAX_CROP}, got {size}")
    if not 0.0 <= val_fraction < 1.0:  # also refuses nan
        raise EdgevidError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not all(0 <= n <= MAX_STILL for n in still):
        raise EdgevidError(f"--still frames must be between 0 and {MAX_STILL} on either side, got {still}")
    if not 0 <= noise <= 50 or not -5 <= drift <= 5:  # also refuses nan
        raise EdgevidError(f"noise must be within [0, 50] and drift within [-5, 5] grey levels, "
                           f"got noise {noise:g}, drift {drift:g}")
    check_mpeg4_fps(fps)


def check_mpeg4_fps(fps: float) -> None:
    """Refuse a frame rate OpenCV cannot write to an mp4v file, before any file is opened.

    OpenCV turns ``fps`` into the time base ``base/rate`` (``base`` a power of ten, ``rate``
    within 0.001 of ``fps * base``); MPEG-4 refuses a rate of 0 or one above 65535. Without
    this check such a rate fails inside OpenCV with a message about a missing encoder
    (and ``inf`` never leaves OpenCV's loop).
    """
    if not math.isfinite(fps) or fps <= 0:
        raise EdgevidError(f"--fps must be a finite number > 0, got {fps}")
    rate, base = int(fps + 0.5), 1
    while abs(rate / base - fps) > 0.001 and base < 10**12:  # OpenCV's own loop (cap_ffmpeg_impl.hpp)
        base *= 10
        rate = int(fps * base + 0.5)
    if rate == 0:
        raise EdgevidError(f"--fps {fps} is too low for an MPEG-4 file (it must be above 0.001)")
    if rate // math.gcd(rate, base) > _MPEG4_MAX_TIMEBASE:
        raise EdgevidError(f"--fps {fps} cannot be written to an MPEG-4 file: its time base would be "
                           f"{base}/{rate} s and MPEG-4 allows 1/{_MPEG4_MAX_TIMEBASE} at most; use fewer decimals "
                           f"(e.g. {round(fps, 1):g})")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _nearest_folder(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def _check_resources(out: Path, videos: int, frames: int, size: int, still: tuple[int, int],
                     noise: float, drift: float) -> None:
    """Refuse a dataset that cannot fit on the disk, or one video that cannot fit in memory.

    Both are estimates, made before anything is written. The disk one is a lower bound, so a
    refusal is certain: mp4v at OpenCV's default bitrate writes at least a byte per 1000
    pixels of a moving frame and per 4096 of a still one (measured above that at 32 to 2048
    px). The memory one adds up the arrays one video goes through (rendering, the float
    copies of ``embed_in_still``, the decoded check).
    """
    total = frames + sum(still)
    need_disk = videos * (frames * (size * size // 1000 + 20) + sum(still) * (size * size // 4096 + 8) + 1024)
    folder = _nearest_folder(out.parent)
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        usage = None
    free = usage.free if usage is not None and usage.total else None  # a size-less file system says nothing
    if free is not None and need_disk > free:
        raise EdgevidError(f"cannot write {out}: {videos} videos of {total} frames at {size}x{size} px need at least "
                           f"{_gib(need_disk)} of disk space, and {folder} has {_gib(free)} free; ask for fewer "
                           "videos, frames or a smaller --size")
    raw = total * size * size * 3  # one video's uint8 frames
    embed = still != (0, 0) or noise or drift
    need_memory = raw * (4 + (9 if embed else 0) + (12 if noise else 0))
    available = _available_memory()
    if available is not None and need_memory > available:
        raise EdgevidError(f"one video of {total} frames at {size}x{size} px needs about {_gib(need_memory)} of memory, "
                           f"and this machine has {_gib(available)} available; use fewer frames (--frames, --still) "
                           "or a smaller --size")


def _prepare_target(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force`` and an earlier ``data synth`` wrote it.

    ``--force`` replaces the whole folder, so it must be ours (``synth.json`` from this
    generator): ``-o . --force`` in a project folder must not delete the project.
    """
    if out.exists() and not out.is_dir():
        raise EdgevidError(f"{out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise EdgevidError(
            f"{out} exists and is not empty: choose another folder or pass --force to replace it"
        )
    if not is_synth_dataset(out):
        raise EdgevidError(f"{out} is not a dataset written by `edgevid data synth` (no {MARKER}); "
                           "refusing to replace it")


def is_synth_dataset(folder: Path) -> bool:
    """Whether ``folder`` was written by ``generate_dataset`` (its ``synth.json`` says so)."""
    try:
        params = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(params, dict) and params.get("generator") == "edgevid.data.synth"


def _val_count(n: int, val_fraction: float) -> int:
    """Videos per class that go to val: at least one if asked for any, and at least one left to train."""
    if val_fraction <= 0:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


def _write_one(path: Path, label: str, rng: np.random.Generator, size: int, frames: int, fps: float,
               still: tuple[int, int] = (0, 0), noise: float = 0.0, drift: float = 0.0,
               shown: str | os.PathLike | None = None) -> None:
    """Render, encode and check one video (``shown``: the path messages name, default ``path``)."""
    clip, _ = render_clip(label, rng, size, frames)
    if still != (0, 0) or noise or drift:
        clip = embed_in_still(clip, still[0], still[1], noise, drift, rng)
    try:
        write_video(path, clip, fps)
        decoded = read_frames(path)  # an OpenCV without a working mp4v encoder must fail here, not in training
        if decoded.shape != clip.shape:
            raise EdgevidError(
                f"{path} decodes to frames of shape {decoded.shape}, expected {clip.shape}: "
                "this OpenCV build's mp4v writer is broken"
            )
    except EdgevidError as exc:
        # OpenCV reports no write error: a full disk or a file size limit shows up as a writer
        # that does not open or a file that does not decode. Say which, rather than blame the
        # file or the encoder.
        cause = _write_limit(path)
        if cause is not None:
            raise EdgevidError(f"cannot write {shown or path}: {cause}") from exc
        raise


def _write_limit(video: Path) -> str | None:
    """Why ``video`` could not be written in full (the file size limit, a full disk), or None."""
    import resource

    try:
        written = video.stat().st_size if video.exists() else 0
        free = shutil.disk_usage(video.parent).free
    except OSError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and written >= limit - (64 << 10):  # FFmpeg writes in 32 KiB blocks
        return f"the file reached this process's file size limit ({limit} bytes, `ulimit -f`)"
    if free < _LOW_DISK:
        return f"no space left on the device ({_gib(free)} free)"
    return None


def generate_dataset(
    out_dir: str | os.PathLike,
    seed: int = 0,
    videos_per_class: int = 30,
    frames: int = 16,
    size: int = 112,
    val_fraction: float = 0.2,
    fps: float = 8.0,
    force: bool = False,
    progress: bool = True,
    still: tuple[int, int] = (0, 0),
    noise: float = 0.0,
    drift: float = 0.0,
) -> SynthSummary:
    """Write the synthetic dataset to ``out_dir`` (atomically) and return what was written.

    ``still`` = (before, after): each action embedded in that many still frames (its first /
    last frame held), with ``noise`` (grey levels) and ``drift`` (grey levels per frame): the
    built-in test set for frame-delta gating (``edgevid.runtime.gating``).

    Generated into a staged folder next to ``out_dir`` (``edgevid.staging``, as
    exports are) and renamed into place at the end: an interrupted run (an error, Ctrl-C,
    SIGTERM) leaves nothing, and the staged folder of a killed run is removed by the next
    run to the same place. An existing non-empty ``out_dir`` is refused unless ``force``.
    Same ``seed`` -> identical lists and frames.
    """
    from tqdm import tqdm  # only the writer needs it

    from edgevid.manifest import check_writable
    from edgevid.staging import staged_directory

    still = (int(still[0]), int(still[1]))
    _check_args(videos_per_class, frames, size, val_fraction, fps, still, noise, drift)
    out = Path(out_dir).resolve()  # a name and a parent even for "." or "ds/"
    _prepare_target(out, force)
    check_writable(out)  # before the estimates: a folder that takes no files is the first thing to say
    _check_resources(out, videos_per_class * len(CLASSES), frames, size, still, noise, drift)
    started = time.perf_counter()
    n_val = _val_count(videos_per_class, val_fraction)
    train_lines: list[str] = []
    val_lines: list[str] = []
    # An empty folder is ours to fill without --force; _prepare_target refused anything else.
    with staged_directory(out, force=force or out.is_dir(), marker=MARKER) as tmp:
        jobs = [(c, name, v) for c, name in enumerate(CLASSES) for v in range(videos_per_class)]
        for name in CLASSES:
            (tmp / name).mkdir()
        for c, name, v in tqdm(jobs, desc="synth videos", unit="video", disable=not progress):
            rel = f"{name}/{name}_{v:03d}.mp4"
            _write_one(tmp / rel, name, clip_rng(seed, c, v), size, frames, fps, still, noise, drift,
                       shown=out / rel)
            # The last n_val videos of each class are val: a stratified, seed-independent split.
            (val_lines if v >= videos_per_class - n_val else train_lines).append(f"{rel} {c}\n")
        (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))
        (tmp / "train.txt").write_text("".join(train_lines))
        (tmp / "val.txt").write_text("".join(val_lines))
        (tmp / MARKER).write_text(json.dumps(_params(seed, videos_per_class, frames, size, fps, val_fraction,
                                                     still, noise, drift), indent=2) + "\n")
    return SynthSummary(out, CLASSES, len(train_lines), len(val_lines), time.perf_counter() - started)


def _params(seed: int, videos_per_class: int, frames: int, size: int, fps: float, val_fraction: float,
            still: tuple[int, int], noise: float, drift: float) -> dict:
    """The generator parameters recorded in ``synth.json`` (provenance, and the mark of our folder)."""
    return {
        "generator": "edgevid.data.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "videos_per_class": videos_per_class,
        "frames": frames,
        "size": size,
        "fps": fps,
        "val_fraction": val_fraction,
        "still": list(still),
        "noise": noise,
        "drift": drift,
        "classes": list(CLASSES),
        "order_pairs": ORDER_PAIRS,
    }
