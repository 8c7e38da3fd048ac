"""The orchestration layer (edgevid.pipeline), the layering it restores, and checkpoint trust.

- Export knows nothing of compression and models nothing of compress: no module of a lower
  floor imports a higher one (checked on the source, every import, lazy ones included).
- An INT8 export is composed by edgevid.pipeline; export_model alone refuses int8.
- Exported graphs carry no unused initializers (ONNX Runtime warns about each on every load).
- Checkpoint metadata is untrusted: absurd values are one clear error; labels that do not fit
  the classifier are a warning, not a silent rename.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgevid.cli import main as cli_main
from edgevid.errors import EdgevidError

PACKAGE = Path(__file__).resolve().parent.parent / "edgevid"
# floor -> packages it must never import (DESIGN.md, "Who composes whom")
FORBIDDEN = {
    "export": ("edgevid.compress", "edgevid.train", "edgevid.report", "edgevid.commands", "edgevid.pipeline"),
    "models": ("edgevid.compress", "edgevid.train", "edgevid.report", "edgevid.commands", "edgevid.pipeline",
               "edgevid.export"),
    "runtime": ("edgevid.compress", "edgevid.train", "edgevid.report", "edgevid.commands", "edgevid.pipeline",
                "edgevid.export", "edgevid.models", "edgevid.data"),
    "data": ("edgevid.compress", "edgevid.train", "edgevid.report", "edgevid.commands", "edgevid.pipeline",
             "edgevid.export"),
}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("floor", list(FORBIDDEN))
def test_no_import_runs_up_the_layers(floor):
    offenders = [f"{path.relative_to(PACKAGE.parent)} imports {name}"
                 for path in sorted((PACKAGE / floor).rglob("*.py")) for name in _imports(path)
                 if name.startswith(FORBIDDEN[floor])]
    assert not offenders, offenders


def test_export_model_alone_refuses_int8(tmp_path):
    from edgevid.export.api import export_model

    with pytest.raises(EdgevidError, match="edgevid.pipeline.export"):
        export_model("tsm", tmp_path / "out", precision="int8", progress=False)
    assert not (tmp_path / "out").exists()


def test_pipeline_refuses_int8_options_without_int8(tmp_path):
    from edgevid.pipeline import export

    with pytest.raises(EdgevidError, match="only apply to --precision int8"):
        export("tsm", tmp_path / "out", calib_size=4, progress=False)


def test_remove_unused_initializers_keeps_what_nodes_read():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgevid.export.onnx import remove_unused_initializers

    used = numpy_helper.from_array(np.ones((2,), np.float32), "used")
    orphan = numpy_helper.from_array(np.zeros((3,), np.float32), "orphan")
    inner = helper.make_graph([helper.make_node("Identity", ["used"], ["y"])], "then", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["out"], then_branch=inner, else_branch=inner)], "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])], initializer=[used, orphan])
    proto = helper.make_model(graph)
    assert remove_unused_initializers(proto) == 1
    assert [i.name for i in proto.graph.initializer] == ["used"]  # read only inside a subgraph
    onnx.checker.check_model(proto)


def test_int8_export_has_no_unused_initializers_and_loads_quietly(tmp_path, runtime_model, capfd):
    """The INT8 QDQ graph used to carry ~20 orphaned initializers: one ORT warning each per load."""
    import onnx
    import onnxruntime as ort

    from edgevid.pipeline import export

    data = tmp_path / "data"
    from edgevid.data.synth import generate_dataset

    generate_dataset(data, videos_per_class=2, frames=8, size=64, val_fraction=0.5, progress=False)
    out = tmp_path / "int8"
    export("tsm-mobilenetv2-online", out, checkpoint=runtime_model[1], size=64, num_classes=5, width_mult=0.5,
           precision="int8", calib=data, calib_size=2, validate=False, progress=False)
    proto = onnx.load(str(out / "model.onnx"))
    used = {name for node in proto.graph.node for name in node.input}
    orphans = [i.name for i in proto.graph.initializer if i.name not in used]
    assert not orphans, orphans[:5]
    opts = ort.SessionOptions()
    opts.log_severity_level = 2  # ORT default: warnings and up; none may be about removed initializers
    capfd.readouterr()
    ort.InferenceSession(str(out / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    assert "Removing initializer" not in capfd.readouterr().err


def _checkpoint(tmp_path: Path, runtime_model, **config) -> Path:
    from edgevid.models.weights import save_checkpoint

    model = runtime_model[0]
    path = tmp_path / "ckpt.pt"
    arch = {"width_mult": 0.5, "num_classes": 5, "frames": 8, "input_size": 64, "resize": 73, **config}
    labels = config.pop("labels", [f"c{i}" for i in range(5)])
    save_checkpoint(path, model, model.config.name, labels, {k: v for k, v in arch.items() if k != "labels"})
    return path


@pytest.mark.parametrize("field, value", [("input_size", -5), ("frames", 10**9), ("frame_stride", 0),
                                          ("width_mult", float("nan")), ("num_classes", "11"), ("resize", 2.5)])
def test_checkpoint_metadata_is_checked(tmp_path, runtime_model, field, value):
    from edgevid.models import build_model

    path = _checkpoint(tmp_path, runtime_model, **{field: value})
    with pytest.raises(EdgevidError, match=f"config {field}="):
        build_model("tsm-mobilenetv2-online", checkpoint=path)


def test_labels_that_do_not_fit_the_head_warn(tmp_path, runtime_model):
    from edgevid.models import LabelsWarning, build_model

    path = _checkpoint(tmp_path, runtime_model, labels=["only", "three", "labels"])
    with pytest.warns(LabelsWarning, match="3 labels for a classifier of 5 classes"):
        model = build_model("tsm-mobilenetv2-online", checkpoint=path)
    assert model.labels == [f"class_{i}" for i in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelsWarning)  # fitting labels: no warning
        assert build_model("tsm-mobilenetv2-online", checkpoint=_checkpoint(tmp_path, runtime_model)).labels[0] == "c0"


def test_export_json_and_labels_warning_on_the_command_line(tmp_path, runtime_model, capsys):
    path = _checkpoint(tmp_path, runtime_model, labels=["a", "b"])
    rc = cli_main(["export", "--model", "tsm-mobilenetv2-online", "--checkpoint", str(path), "--no-validate",
                   "-o", str(tmp_path / "out"), "--json", "-q"])
    captured = capsys.readouterr()
    assert rc == 0
    doc = json.loads(captured.out)
    assert doc["output"] == str((tmp_path / "out").absolute())
    assert doc["manifest"]["labels"] == [f"class_{i}" for i in range(5)]
    assert "edgevid export: warning: checkpoint" in captured.err and "2 labels" in captured.err


def test_zoo_list_quiet_prints_names(capsys):
    from edgevid.models import list_models

    assert cli_main(["zoo", "list", "-q"]) == 0
    assert capsys.readouterr().out.split() == [c.name for c in list_models()]
