"""The baselines: the code paths of the original eKuiper tutorials, ported only as far
as today's libraries require, keeping what they did and what it costs.

- OpenVINO tutorial (docs/en_US/guide/ai/python_openvino_tutorial.md): reads and
  compiles the model on EVERY call, decodes the full-size image, resizes with
  cv2's default, transposes and converts in numpy, thresholds and finds contours
  in numpy/cv2, encodes the side-by-side picture (float64 mask, as it was).
  Ported: IECore.read_network/load_network -> Core.read_model/compile_model,
  np.fromstring -> np.frombuffer, .tostring() -> .tobytes(); the u8 -> f32
  conversion the old Inference Engine did implicitly is an explicit astype.
- pyai tutorial (python_tensorflow_lite_tutorial.md): Pillow decode, Pillow's
  default resize, np.expand_dims; the interpreter is created once.
"""
import base64
import io
import time

import cv2
import numpy as np
import openvino as ov
from PIL import Image


def tutorial_inference(b64, model_xml, device="CPU"):
    """One call of the tutorial's inference(file_bytes), model loading included."""
    core = ov.Core()
    model = core.read_model(model_xml)
    compiled = core.compile_model(model, device)
    n, c, h, w = model.input().shape

    t0 = time.perf_counter()
    img_str = base64.b64decode(b64.encode("ascii"))
    frame = cv2.imdecode(np.frombuffer(img_str, np.uint8), cv2.IMREAD_COLOR)  # BGR, as the tutorial fed it
    frame = cv2.resize(frame, (w, h))
    org_img = frame.copy()
    images = np.expand_dims(frame.transpose((2, 0, 1)), axis=0).astype(np.float32)
    pred = compiled(images)[compiled.output(0)]
    infer_time = (time.perf_counter() - t0) * 1000
    result = np.squeeze(pred)
    thresh = 0.5
    result[result < thresh] = 0
    result[result > thresh] = 255
    result = result.astype(np.uint8)
    contours, _ = cv2.findContours(result, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)

    # float64, hstacked with the uint8 frame, as in the tutorial (OpenCV warns once
    # that it converts the float64 picture to 8 bits for JPEG).
    pred_mask = np.zeros((h, w, 3))
    pred_mask[result < 0.5] = (0, 0, 0)
    pred_mask[result >= 0.5] = (255, 255, 255)
    jpeg = cv2.imencode(".jpg", np.hstack((org_img, pred_mask)))[1].tobytes()
    return {"inference time": infer_time, "defect": len(contours), "base64": base64.b64encode(jpeg).decode()}


class TutorialLabeler:
    """The pyai tutorial's label(), with the interpreter made once at start."""

    def __init__(self, model_path, labels_path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter
        self.interpreter = Interpreter(model_path=model_path)  # default threads, as the tutorial
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        with open(labels_path, encoding="utf-8") as f:
            self.labels = [line.strip() for line in f]

    def label(self, b64):
        _, height, width, _ = self.input["shape"]
        img = Image.open(io.BytesIO(base64.b64decode(b64))).resize((width, height))
        input_data = np.expand_dims(img, axis=0)
        self.interpreter.set_tensor(self.input["index"], input_data)
        self.interpreter.invoke()
        results = np.squeeze(self.interpreter.get_tensor(self.output["index"]))
        scale, zero = self.output["quantization"]
        top_k = results.argsort()[-5:][::-1]
        return [{"confidence": float((results[i] - zero) * scale), "label": f"{i}:{self.labels[i]}"} for i in top_k]
