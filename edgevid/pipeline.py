"""The orchestration layer the commands call: it composes the floors below it.

Export writes graphs and knows nothing of compression; compression knows nothing of
artifacts. An INT8 export is both, so it is put together here: the NNCF quantizer from
``edgevid.compress`` is handed to ``edgevid.export.api.export_model`` as its graph
quantizer. Lower packages never import this module.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from edgevid.manifest import Manifest


def export(model: str, out_dir: str | os.PathLike | None = None, *, precision: str | None = None,
           calib: str | os.PathLike | None = None, calib_size: int | None = None,
           max_accuracy_drop: float | None = None, **options: Any) -> Manifest:
    """Export a zoo model like ``export_model``; ``precision="int8"`` quantizes with NNCF.

    - ``calib``: dataset folder to calibrate on (its ``train`` split; its ``val`` split
      measures INT8 against FP32); default the built-in synthetic set.
    - ``calib_size``: clips to calibrate on (default 24).
    - ``max_accuracy_drop``: NNCF accuracy-controlled quantization, keeping layers in float
      until val top-1 drops by at most this much (0.01 = 1 point).

    The INT8 options are checked before any heavy work; they are refused for other precisions.
    ``options`` go to ``edgevid.export.api.export_model`` unchanged.
    """
    from edgevid.export.api import export_model

    quantizer = None
    if precision == "int8" or calib is not None or calib_size is not None or max_accuracy_drop is not None:
        from edgevid.compress.export_int8 import check_int8_options, quantize_for_export

        check_int8_options(precision, calib, calib_size, max_accuracy_drop)
        quantizer = functools.partial(quantize_for_export, calib=calib, calib_size=calib_size,
                                      max_accuracy_drop=max_accuracy_drop)
    return export_model(model, out_dir, precision=precision, quantizer=quantizer, **options)
