"""The default defect detector (tools/build_models.py) written as an ONNX graph, for `defect.model: x.onnx`.

OpenVINO reads ONNX but cannot write it, so the same local-contrast graph is
spelt out here with the `onnx` package, from build_models.py's own constants,
at any input size. tests/integration/test_config.py checks it finds what the IR finds.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tools import build_models

OPSET = 17  # ReduceMean still takes its axes as an attribute


class _Graph:
    def __init__(self):
        self.nodes, self.constants, self.count = [], [], 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, value):
        name = self.name("const")
        self.constants.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op_type, *inputs, **attributes):
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def box_blur(self, x, size):
        pad = size // 2  # exclude padding from the mean, as the IR's avg_pool(exclude_pad=True)
        x = self.op("AveragePool", x, kernel_shape=[1, size], pads=[0, pad, 0, pad], count_include_pad=0)
        return self.op("AveragePool", x, kernel_shape=[size, 1], pads=[pad, 0, pad, 0], count_include_pad=0)

    def box_max(self, x, size):
        pad = size // 2
        x = self.op("MaxPool", x, kernel_shape=[1, size], pads=[0, pad, 0, pad])
        return self.op("MaxPool", x, kernel_shape=[size, 1], pads=[pad, 0, pad, 0])

    def step(self, x, threshold):
        return self.op("Sigmoid", self.op("Mul", self.op("Sub", x, self.const(threshold)),
                                          self.const(build_models.SLOPE)))


def defect_model_onnx(size: int = build_models.MODEL_SIZE) -> onnx.ModelProto:
    """RGB float [1,3,S,S] in (0-255), defect probability [1,1,S,S] out: build_models.defect_model, in ONNX."""
    g = _Graph()
    luma = g.op("Conv", "image", g.const(np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)))
    deviation = g.op("Sub", g.box_blur(luma, 3), g.box_blur(luma, build_models.BACKGROUND_WINDOW))
    magnitude = g.op("Abs", deviation)
    texture = g.op("Add", g.op("Mul", g.op("ReduceMean", magnitude, axes=[2, 3], keepdims=1), g.const(1.25)),
                   g.const(0.5))
    z = g.op("Div", magnitude, texture)
    probability = g.op("Mul", g.step(z, build_models.Z_LOW),
                       g.step(g.box_max(z, build_models.PEAK_WINDOW), build_models.Z_PEAK))
    probability = g.box_max(probability, build_models.JOIN_WINDOW)
    g.nodes.append(helper.make_node("Identity", [probability], ["defect_probability"]))
    graph = helper.make_graph(
        g.nodes, "surface_defect_local_contrast_onnx",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("defect_probability", TensorProto.FLOAT, [1, 1, size, size])],
        initializer=g.constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="defect-tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def write_defect_model_onnx(path: str, size: int = build_models.MODEL_SIZE) -> str:
    onnx.save(defect_model_onnx(size), path)
    return path
