# --- runtime fixtures (tests/test_runtime.py) ------------------------------------------------
# A small streaming TSM and its clip twin, exported once per module with the real exporter
# (edgevid.export.api.export_model) at 64 px, width 0.5, 5 classes, plus a short real mp4.

import numpy as np
import pytest

RUNTIME_SIZE = 64
RUNTIME_CLASSES = 5


def _runtime_calibrated_tsm():
    """Online TSM with BatchNorm statistics from one pass over random clips.

    A randomly initialised network keeps BN at mean 0 / var 1 and its logits come out nearly
    the same for every frame; with real statistics they depend on the frames and on the
    temporal states, so a broken state would show in the comparisons.
    """
    import torch

    from edgevid.models import build_model

    torch.manual_seed(0)
    model = build_model("tsm-mobilenetv2-online", num_classes=RUNTIME_CLASSES, width_mult=0.5, global_rng=True)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration pass
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model.forward_frames(torch.randn(2, 8, 3, RUNTIME_SIZE, RUNTIME_SIZE))
    return model.eval()


@pytest.fixture(scope="module")
def runtime_model(tmp_path_factory):
    """(torch model, checkpoint path) of the calibrated online TSM."""
    import torch

    model = _runtime_calibrated_tsm()
    path = tmp_path_factory.mktemp("runtime_ckpt") / "tsm_online_calibrated.pt"
    torch.save(model.state_dict(), path)
    return model, path


def _runtime_export(runtime_model, tmp_path_factory, **kwargs):
    from edgevid.export.api import export_model

    out = tmp_path_factory.mktemp("runtime_artifacts") / f"{kwargs['mode']}-{kwargs['target']}"
    export_model("tsm-mobilenetv2-online", out, checkpoint=runtime_model[1], size=RUNTIME_SIZE,
                 num_classes=RUNTIME_CLASSES, width_mult=0.5, validate=False, progress=False, force=True,
                 **kwargs)
    return out


@pytest.fixture(scope="module")
def runtime_stream_artifact(runtime_model, tmp_path_factory):
    """Streaming export for OpenVINO: model.onnx (ONNX Runtime) and model.xml/.bin (OpenVINO)."""
    return _runtime_export(runtime_model, tmp_path_factory, mode="stream", target="openvino", frames=8)


@pytest.fixture(scope="module")
def runtime_clip_artifact(runtime_model, tmp_path_factory):
    """Clip-mode export (4 frames) for ONNX Runtime."""
    return _runtime_export(runtime_model, tmp_path_factory, mode="clip", target="onnxruntime", frames=4)


def _runtime_write_video(path, frames=24, size=(112, 84), fps=25.0, seed=0):
    """A short real mp4 (mp4v): gradient background, a moving box and a drifting colour."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    base = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    for t in range(frames):
        frame = base.copy()
        frame[..., 0] += np.linspace(0, 150, w, dtype=np.uint8)[None]
        frame[..., 1] += np.uint8((t * 9) % 180)
        x = 4 + 4 * t
        cv2.rectangle(frame, (x, 20 + t % 7), (x + 22, 52), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def runtime_video(tmp_path_factory):
    """24-frame 112x84 mp4 (non-square: exercises resize + centre crop)."""
    return _runtime_write_video(tmp_path_factory.mktemp("runtime_video") / "clip.mp4")



# --- TensorRT fakes (tests/test_tensorrt_fake.py, tests/test_tensorrt_review.py) -------------------


@pytest.fixture
def own_engine_cache(tmp_path, monkeypatch):
    """The test's own edgevid cache (TensorRT engines, timing caches)."""
    monkeypatch.setenv("EDGEVID_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trt_artifact(runtime_model, tmp_path_factory):
    """A static-shape stream export for the tensorrt target (engine built on first load)."""
    from edgevid.export.api import export_model

    out = tmp_path_factory.mktemp("trt_artifacts") / "stream-tensorrt"
    export_model("tsm-mobilenetv2-online", out, checkpoint=runtime_model[1], size=64, num_classes=5, width_mult=0.5,
                 mode="stream", target="tensorrt", frames=8, validate=False, progress=False)
    return out


# --- report fixtures (tests/test_report*.py) ----------------------------------------------------


@pytest.fixture(scope="session")
def report_cache(tmp_path_factory):
    """One artifact cache for the report tests of a session: their reports ask for the same
    64 px FP32 stream export of the shipped TSM, so it is built once, not once per module."""
    return tmp_path_factory.mktemp("report-cache")


# --- training fixtures (tests/test_train*.py, test_writes.py) ------------------------------------


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module's training runs (small shared machines: two threads fight
    the other tests' work), the setting restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
