"""Fine-tuning a zoo model on a video dataset (CPU-friendly), with evaluation each epoch,
the best checkpoint kept, and resumption from the last epoch.

Resumption restores the model, optimizer, schedule, the global torch RNG and the data
order, so with ``workers=0`` a run resumed after epoch k ends with the same weights as an
uninterrupted one (with worker processes the augmentation draws differ after a resume).
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn

from edgevid.errors import EdgevidError
from edgevid.manifest import Preprocess

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


@dataclass
class TrainConfig:
    """Everything one training run depends on (recorded in the checkpoint)."""

    model: str
    data: str
    out: str
    checkpoint: str | None = None  # initial weights (ours, official TSM, plain state dict)
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    size: int = 112
    resize: int | None = None  # shorter side before the crop; default size * 256 / 224
    frames: int = 8
    width_mult: float | None = None
    sampling: str | None = None  # "segment" | "dense"; None: the model's (dense for motion inputs and streams)
    regime: str | None = None  # "clip" | "stream" (edgevid.train.regime); None: the model's default
    stream_frames: int | None = None  # S, the stream regime's frames per step; None: regime.default_stream_frames
    workers: int = 1
    seed: int = 0
    resume: bool = False
    on_error: str = "raise"
    progress: bool = True
    force: bool = False  # replace an existing edgevid checkpoint at ``out`` (and its ``.last``)

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing the model is trained with (and deployed with)."""
        from edgevid.models import get_config

        cfg = get_config(self.model)
        resize = self.resize or round(self.size * 256 / 224)
        return Preprocess(resize=resize, crop=self.size, mean=list(cfg.mean), std=list(cfg.std))


@dataclass
class EpochResult:
    """Metrics of one epoch."""

    epoch: int
    train_loss: float
    val_top1: float
    val_pair: float
    seconds: float
    val_stream_top1: float | None = None  # stream regime: the output after S frames (a stream S steps old)

    @property
    def score(self) -> float:
        """What picks the best epoch: val top-1, in the stream regime the mean of the clip's and the stream's."""
        return self.val_top1 if self.val_stream_top1 is None else (self.val_top1 + self.val_stream_top1) / 2


# Bounds of the numeric settings (the CLI checks the same at parse time: edgevid.commands.train).
MAX_LR = 10.0  # AdamW steps are ~lr per weight: far above any useful rate, still finite
MAX_WIDTH = 4.0  # MobileNetV2 width multiplier
MAX_SEED = 2**32 - 1  # numpy's seeding range
MAX_STREAM_FRAMES = 1024  # the manifest's bound on frames

# The fields a resumed run must share with the run that wrote <out>.last.
_RESUME_KEYS = ("model", "width_mult", "frames", "size", "resize", "sampling", "batch_size", "regime",
                "stream_frames")


def last_path(out: str | os.PathLike) -> Path:
    """Where the resumable state of the latest epoch lives, next to the best checkpoint."""
    return Path(f"{out}.last")


@torch.no_grad()
def predict(model: nn.Module, loader, progress: bool = False, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of every clip in ``loader``."""
    from tqdm import tqdm

    model.eval()
    logits, labels = [], []
    for clip, label in tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr):
        logits.append(model(clip).numpy())
        labels.append(label.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot train, with the option's name, before any data is read."""
    from edgevid.data.datasets import ON_ERROR
    from edgevid.data.sampling import SAMPLING_MODES
    from edgevid.models import get_config
    from edgevid.train.workers import max_workers

    model_config = get_config(cfg.model)  # unknown model: the error lists the known ones
    if model_config.family == "two-stream":  # TSN trains its streams apart, and fuses their scores
        bb = model_config.backbone
        raise EdgevidError(f"{model_config.name} is trained as its two streams: train tsn-{bb} and tsn-flow-{bb}, "
                           f"then `edgevid eval --model {model_config.name} --rgb-checkpoint RGB.pt "
                           "--flow-checkpoint FLOW.pt`")
    for name, value, low in (("--epochs", cfg.epochs, 1), ("--batch-size", cfg.batch_size, 1),
                             ("--frames", cfg.frames, 1), ("--size", cfg.size, 16), ("--workers", cfg.workers, 0)):
        if value < low:
            raise EdgevidError(f"{name} must be at least {low}, got {value}")
    if cfg.workers > max_workers():
        raise EdgevidError(f"--workers must be at most {max_workers()} (4 per CPU, at most 64), got {cfg.workers}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise EdgevidError(f"--seed must be between 0 and {MAX_SEED}, got {cfg.seed}")
    model_config.check_input(cfg.frames, cfg.size)
    if cfg.resize is not None and cfg.resize < cfg.size:
        raise EdgevidError(f"resize ({cfg.resize}) must be at least the crop --size ({cfg.size})")
    # "not >" lets neither NaN nor a negative through; inf is refused by name (it trains NaN weights).
    if not 0 < cfg.lr <= MAX_LR:
        raise EdgevidError(f"--lr must be > 0 and at most {MAX_LR:g}, got {cfg.lr}")
    if cfg.width_mult is not None and not 0 < cfg.width_mult <= MAX_WIDTH:
        raise EdgevidError(f"--width-mult must be > 0 and at most {MAX_WIDTH:g}, got {cfg.width_mult}")
    if cfg.sampling is not None and cfg.sampling not in SAMPLING_MODES:
        raise EdgevidError(f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {cfg.sampling!r}")
    motion = model_config.motion
    if motion is not None and cfg.sampling == "segment":
        raise EdgevidError(f"--sampling segment does not apply to {model_config.name}: its {motion.kind} stacks are "
                           f"made from {motion.length} + --frames consecutive frames (dense sampling)")
    _check_regime(cfg, model_config)
    if cfg.on_error not in ON_ERROR:
        raise EdgevidError(f"on_error must be one of {', '.join(ON_ERROR)}, got {cfg.on_error!r}")
    _check_output(cfg)


def _check_regime(cfg: TrainConfig, model_config: Any) -> None:
    """Refuse a regime the model cannot train in, and options of the other regime."""
    from edgevid.train.regime import REGIMES, default_regime

    if cfg.regime is not None and cfg.regime not in REGIMES:
        raise EdgevidError(f"--regime must be one of {', '.join(REGIMES)}, got {cfg.regime!r}")
    if (cfg.regime or default_regime(model_config)) == "clip":
        if cfg.stream_frames is not None:
            raise EdgevidError(f"--stream-frames applies to --regime stream (the default of the streaming 3D CNNs and "
                               f"LRCN), not to the clip regime{'' if cfg.regime else ' of ' + model_config.name}")
        return
    if not model_config.stream_training:
        # TSM's stream averages per-frame scores, as its clip does; a motion model's stacks have their own warm-up.
        raise EdgevidError(f"--regime stream applies to the models whose stream outgrows their clip (the -online 3D "
                           f"CNNs and LRCN), not to {model_config.name}")
    if cfg.sampling == "segment":
        whose = "" if cfg.regime else f" (the default of {model_config.name})"
        raise EdgevidError(f"--sampling segment does not apply to the stream regime{whose}: a stream sees consecutive "
                           "frames; pass --regime clip to train on segments")
    if cfg.stream_frames is not None and not cfg.frames < cfg.stream_frames <= MAX_STREAM_FRAMES:
        raise EdgevidError(f"--stream-frames must be more than --frames ({cfg.frames}) and at most {MAX_STREAM_FRAMES},"
                           f" got {cfg.stream_frames}")


def resolve_sampling(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its regime and sampling filled in: the model's own where None.

    The stream regime samples consecutive frames (dense), as does a motion model; the rest segments.
    """
    from edgevid.models import get_config
    from edgevid.train.regime import default_regime, default_stream_frames

    model = get_config(cfg.model)
    regime = cfg.regime or default_regime(model)
    if regime == "stream":
        return replace(cfg, regime=regime, sampling="dense",
                       stream_frames=cfg.stream_frames or default_stream_frames(cfg.frames))
    sampling = cfg.sampling or ("dense" if model.motion is not None else "segment")
    return replace(cfg, regime=regime, sampling=sampling)


def _check_output(cfg: TrainConfig) -> None:
    """Refuse to overwrite what is not ours, and an unwritable folder, before any data is read.

    ``--resume`` continues into its own ``<out>``; otherwise an existing ``<out>`` or
    ``<out>.last`` needs ``force`` and must have been written by edgevid.
    """
    from edgevid.models.weights import check_checkpoint_output

    # With --resume the best checkpoint so far is there by design (still: ours only).
    check_checkpoint_output(cfg.out, force=cfg.force or cfg.resume)
    last = last_path(cfg.out)
    if cfg.resume or not os.path.lexists(last):
        return
    if not cfg.force:
        raise EdgevidError(f"{last} already exists (the state of an earlier run): pass --resume to continue "
                           "that run, or --force to start over")
    if last.is_symlink() or not _is_training_state(last):
        raise EdgevidError(f"{last} is not a training state written by edgevid train; refusing to replace it")


def _is_training_state(path: Path) -> bool:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return isinstance(state, dict) and {"model", "optimizer", "scheduler", "epoch"} <= state.keys()


def _resume_config(cfg: TrainConfig) -> dict[str, Any]:
    """The settings recorded in ``<out>.last`` that a resumed run must repeat (model name canonical)."""
    from edgevid.models import get_config

    return {k: v for k, v in asdict(cfg).items() if k in _RESUME_KEYS} | {"model": get_config(cfg.model).name}


def _resume_state(cfg: TrainConfig) -> dict[str, Any]:
    """The state saved at ``<out>.last``, checked against this run's settings (classes: by the caller)."""
    path = last_path(cfg.out)
    if not path.is_file():
        raise EdgevidError(f"nothing to resume: {path} not found (train without --resume first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is a user-facing problem
        raise EdgevidError(f"cannot resume from {path}: the file is damaged or was not written by edgevid train "
                           f"({type(exc).__name__}); delete it and train without --resume") from exc
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "epoch"} <= state.keys():
        raise EdgevidError(f"cannot resume from {path}: not a training state written by edgevid train")
    saved = state.get("config", {})
    now = _resume_config(cfg)
    changed = [f"{k} {saved[k]} -> {now[k]}" for k in _RESUME_KEYS if k in saved and saved[k] != now[k]]
    if changed:
        raise EdgevidError(f"cannot resume from {path}: it was trained with other settings ({'; '.join(changed)});"
                           " use the same settings, or train from scratch without --resume")
    return state


def loader_workers(workers: int) -> dict[str, Any]:
    """DataLoader keywords for ``workers`` processes, started by a fork server, dying with this process.

    Plain fork copies a process whose OpenVINO / ONNX Runtime / OpenMP thread pools may be
    running (library use after an export or a benchmark), and the child can crash; a fork
    server forks from a clean process instead. CPython's fork server and its children keep
    each other alive once their parent is killed, so each worker watches its parent
    (``edgevid.train.workers``).
    """
    from edgevid.train.workers import max_workers, watch_parent

    if not 0 <= workers <= max_workers():
        raise EdgevidError(f"--workers must be between 0 and {max_workers()} (4 per CPU, at most 64), got {workers}")
    if workers == 0:
        return {"num_workers": 0}
    return {"num_workers": workers, "multiprocessing_context": "forkserver", "worker_init_fn": watch_parent}


_F = TypeVar("_F", bound=Callable[..., Any])


def restores_sigchld(fn: _F) -> _F:
    """Run ``fn`` and put the process's SIGCHLD handling back as it was afterwards.

    A DataLoader with worker processes installs a process-wide Python SIGCHLD handler the
    first time it iterates, and torch never removes it. edgevid is also a library: the
    program around it (a test run, a notebook, a server) keeps spawning subprocesses, and
    every child exit then interrupts it with that handler. In the test suite that showed as
    a SIGSEGV (si_code SI_KERNEL) in the main thread on an AMX CPU, right as a child exited,
    long after training had finished; with the handler gone the same run passes. Inside
    ``fn`` torch keeps its handler (it reports a worker that died), and its "installed"
    flag is reset so a later DataLoader installs it again.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)  # signal handlers belong to the main thread
        from torch.utils.data._utils import signal_handling

        before = signal.getsignal(signal.SIGCHLD)
        was_set = getattr(signal_handling, "_SIGCHLD_handler_set", False)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.signal(signal.SIGCHLD, before if before is not None else signal.SIG_DFL)
            signal_handling._SIGCHLD_handler_set = was_set

    return wrapper  # type: ignore[return-value]


def _loaders(cfg: TrainConfig, generator: torch.Generator) -> tuple[DataLoader, DataLoader, DataLoader | None,
                                                                   list[str]]:
    """Train and val loaders of ``cfg.data`` (train order drawn from ``generator``), in the stream regime
    a val loader of S-frame streams too (else None), and the class names."""
    from torch.utils.data import DataLoader

    from edgevid.data.sampling import ClipSampler
    from edgevid.data.torch_dataset import clip_sampler, make_torch_dataset
    from edgevid.models import get_config

    model = get_config(cfg.model)
    sampler = clip_sampler(cfg.frames, cfg.sampling or "segment", model.motion, model.frame_stride)
    common = {"preprocess": cfg.preprocess, "on_error": cfg.on_error, "motion": model.motion}
    streams = ClipSampler(cfg.stream_frames, mode="dense") if cfg.regime == "stream" else None
    train = make_torch_dataset(cfg.data, "train", train=True, sampler=streams or sampler, **common)
    val = make_torch_dataset(cfg.data, "val", train=False, sampler=sampler, **common)
    if train.classes != val.classes:
        raise EdgevidError(f"train and val splits of {cfg.data} have different classes")
    if len(train.classes) < 2:
        raise EdgevidError(f"{cfg.data} has only one class ({train.classes[0]}): a classifier needs at least two")
    if [s.path for s in train.clips.samples] == [s.path for s in val.clips.samples]:
        print(f"note: {cfg.data} has no val split (val.txt or val/): validating on the training videos",
              file=sys.stderr)
    loading = {**loader_workers(cfg.workers), "persistent_workers": cfg.workers > 0}
    train_loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train) > cfg.batch_size,
                              generator=generator, **loading)
    val_loader = DataLoader(val, batch_size=cfg.batch_size, shuffle=False, **loading)
    val_streams = None
    if streams is not None:
        val_streams = DataLoader(make_torch_dataset(cfg.data, "val", train=False, sampler=streams, **common),
                                 batch_size=cfg.batch_size, shuffle=False, **loading)
    return train_loader, val_loader, val_streams, train.classes


def run_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler, desc: str, progress: bool,
              warmup: int | None = None) -> list[float]:
    """One pass of cross-entropy training over ``loader``; the loss of every step.

    ``warmup``: the stream regime (``edgevid.train.regime``), loss on the outputs after that many frames.
    """
    from tqdm import tqdm

    from edgevid.train.regime import stream_loss

    loss_fn = nn.CrossEntropyLoss()
    model.train()
    losses: list[float] = []
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr)
    for clip, label in bar:
        loss = loss_fn(model(clip), label) if warmup is None else stream_loss(model, clip, label, warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def _require_finite(model: nn.Module, epoch: int, lr: float) -> None:
    """Stop a run whose weights went NaN or inf, before anything of this epoch is saved."""
    from edgevid.models.weights import nonfinite_tensors

    bad, total = nonfinite_tensors(model.state_dict())
    if bad:
        raise EdgevidError(f"training diverged in epoch {epoch}: {len(bad)} of {total} weight tensors hold NaN or inf "
                           f"(e.g. {bad[0]}); nothing of this epoch was saved: train again with a lower --lr "
                           f"(this run: {lr:g})")


def _frame_stride(cfg: TrainConfig, num_frames: list[int | None]) -> int:
    """The typical gap between the frames the model sees in training.

    The streaming runtime steps the model this many frames apart, so its temporal shift sees
    the frame gap it learned (segment sampling of a 16-frame video into 8 segments: 2). A
    motion model learned its fields at the sampler's stride.
    """
    from edgevid.models import get_config

    model = get_config(cfg.model)
    if model.motion is not None:
        return model.frame_stride
    if cfg.sampling == "dense":
        return 1
    counts = [n for n in num_frames if n]
    return max(1, round(float(np.median(counts)) / cfg.frames)) if counts else 1


def build_for(cfg: TrainConfig) -> nn.Module:
    """The network ``cfg`` trains: its initial weights, built for this run's clip length and size.

    A causal 3D net's window averages span the clip it is trained on, as eval and export rebuild it from
    the checkpoint's frames (built for the zoo's default clip, it was another network). Our own checkpoint's
    recorded frames win in ``build_model``, so a run with other ``--frames`` rebuilds and loads its weights.
    """
    from edgevid.models import build_model

    model = build_model(cfg.model, checkpoint=cfg.checkpoint, width_mult=cfg.width_mult, global_rng=True,
                        frames=cfg.frames, input_size=cfg.size)
    if model.config.frames == cfg.frames:
        return model
    weights, frames = model.state_dict(), model.config.frames
    model = build_model(cfg.model, num_classes=model.num_classes, width_mult=model.config.width_mult,
                        global_rng=True, frames=cfg.frames, input_size=cfg.size)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise EdgevidError(f"{cfg.checkpoint} was trained on {frames}-frame clips and its network does not fit "
                           f"--frames {cfg.frames} (a classifier sized by the clip, a pruned network): train with "
                           f"--frames {frames}") from exc
    return model


@restores_sigchld
def train(cfg: TrainConfig) -> list[EpochResult]:
    """Train, keeping the best checkpoint at ``cfg.out`` (by ``EpochResult.score``: val top-1, in the stream regime
    its mean with the stream's); returns the history."""

    from edgevid.manifest import atomic_writer
    from edgevid.metrics import known_order_pairs, order_pair_accuracy, top1_accuracy
    from edgevid.models.weights import save_checkpoint

    check_config(cfg)
    cfg = resolve_sampling(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    state = _resume_state(cfg) if cfg.resume else None  # before reading data: fail fast
    generator = torch.Generator().manual_seed(cfg.seed)  # the order of training clips
    train_loader, val_loader, val_streams, classes = _loaders(cfg, generator)
    if state is not None and list(state.get("classes", classes)) != classes:
        raise EdgevidError(f"cannot resume from {last_path(cfg.out)}: it was trained on other classes "
                           f"({len(state['classes'])}: {', '.join(state['classes'][:4])}, ...) than {cfg.data} has "
                           f"({len(classes)}: {', '.join(classes[:4])}, ...)")
    pairs = known_order_pairs(classes)
    model = build_for(cfg)
    if model.num_classes != len(classes):
        model.reset_classifier(len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history: list[EpochResult] = []
    best, start = -1.0, 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else (lines or [""])[0]
            raise EdgevidError(f"cannot resume from {last_path(cfg.out)}: it does not fit {cfg.model} with these "
                               f"settings (another --model or --width?): {detail[:200]}") from exc
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if "loader_rng" in state:
            generator.set_state(state["loader_rng"])
        start, best = state["epoch"], state["best"]
        history = [EpochResult(**h) for h in state["history"]]
        if start >= cfg.epochs:
            print(f"{last_path(cfg.out)} has already trained {start} epochs (--epochs {cfg.epochs}): nothing to do",
                  file=sys.stderr)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    arch = {"width_mult": model.config.width_mult, "num_classes": len(classes), "frames": cfg.frames,
            "frame_stride": _frame_stride(cfg, train_loader.dataset.clips.num_frames),
            "input_size": cfg.size, "resize": cfg.preprocess.resize, "sampling": cfg.sampling}
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        losses = run_epoch(model, train_loader, optimizer, scheduler, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress,
                           warmup=cfg.frames if cfg.regime == "stream" else None)
        _require_finite(model, epoch + 1, cfg.lr)
        logits, labels = predict(model, val_loader, cfg.progress)
        stream_top1 = None
        if val_streams is not None:
            stream_top1 = top1_accuracy(*predict(model, val_streams, cfg.progress, desc="eval streams"))
        result = EpochResult(epoch + 1, float(np.mean(losses)), top1_accuracy(logits, labels),
                             order_pair_accuracy(logits, labels, classes, pairs), time.perf_counter() - t0,
                             stream_top1)
        history.append(result)
        improved = result.score > best
        if improved:
            best = result.score
            save_checkpoint(cfg.out, model, model.config.name, classes, arch, epoch=result.epoch,
                            metrics={"val_top1": result.val_top1, "val_order_pair": result.val_pair}
                            | ({"val_stream_top1": stream_top1} if stream_top1 is not None else {}),
                            train_config={k: v for k, v in asdict(cfg).items()
                                          if v is not None and k != "force"})
        # One line per epoch even with --quiet: the log of what happened.
        streamed = f" (stream {stream_top1:.3f})" if stream_top1 is not None else ""
        print(f"epoch {result.epoch:3d}/{cfg.epochs}  loss {result.train_loss:.3f}  val top-1 {result.val_top1:.3f}"
              f"{streamed}  order-pair {result.val_pair:.3f}  {result.seconds:.0f}s{'  *best' if improved else ''}",
              file=sys.stderr)
        with atomic_writer(last_path(cfg.out)) as fh:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                        "loader_rng": generator.get_state(), "epoch": epoch + 1, "best": best,
                        "history": [asdict(h) for h in history], "classes": list(classes),
                        "config": _resume_config(cfg)}, fh)
    return history
