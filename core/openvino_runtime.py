"""OpenVINO's runtime, imported without its model-conversion tools: `from openvino_runtime import ov`.

`import openvino` also imports openvino.tools.ovc (convert_model), and that import sends a usage
event to Google Analytics: openvino-telemetry 2025.2 is told enable_opt_in_dialog=False, so with
no ~/intel/openvino_telemetry file it counts as consent. It writes ~/intel/openvino_ga_cid (a
client id) and ~/intel/stats, and forks a process to POST the event (measured: one fork and both
files in every process that imports OpenVINO, unless CI=true). A plugin on a factory gateway converts no model,
must not phone home and must not fork beside kuiperd, so that one import is refused here;
openvino/__init__.py skips it on ImportError and the runtime is unchanged. Import this module
before anything imports openvino.
"""
import sys

# A None entry makes `import openvino.tools.ovc` raise ImportError (a process that already
# imported it, such as tools/build_models.py, keeps it).
sys.modules.setdefault("openvino.tools.ovc", None)

import openvino as ov  # noqa: E402
from openvino.preprocess import ColorFormat, PrePostProcessor  # noqa: E402

__all__ = ["ColorFormat", "PrePostProcessor", "ov"]
