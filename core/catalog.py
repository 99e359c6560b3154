"""The plugin's functions, each declared once.

Derived from FUNCTIONS: the SQL functions and their window forms (label_func.py, batch_func.py),
the model host (core/model_host.py), the HTTP routes and OpenAPI (service/http_api.py), the gRPC
mapping and methods (service/grpc_messages.py, service/grpc_api.py), the client's choices and the
eKuiper external-service descriptor. Checked against it by tests/unit/test_functions.py: defect.json
and functions/*.json (eKuiper's descriptions, with their translations) and defect.proto.
Adding a function: docs/development.md.
"""
import inference
import label
from core.functions import FunctionSpec, Option
from core.results import Inspection, Label

LABEL_IMAGE = FunctionSpec(
    name="labelImage",
    summary="Label an image: the top k ImageNet classes (TFLite MobileNet v2)",
    section="label",
    model=label.ImageLabeler,
    run=lambda model, pixels, size, options: model.label(pixels, options.value),
    option=Option("k", int, minimum=1, model_maximum=lambda model: len(model.labels), bound="the class count",
                  default_key="label.top_k", description="labels to return, best first"),
    result=list[Label],
    sample=label.SAMPLE_IMAGE,
    runtimes=lambda section: label.candidate_runtimes(section["runtime"]),
    streams=lambda runtime: runtime == "openvino",
    suffixes=(".tflite",),
    labelled=True,
    exports=False,
)

INFERENCE = FunctionSpec(
    name="inference",
    summary="Find surface defects (OpenVINO segmentation): count, boxes and a picture",
    section="defect",
    model=inference.DefectSegmenter,
    run=lambda model, pixels, size, options: model.inspect(pixels, options.value, size,
                                                           options.picture or inference.PICTURES[0]),
    option=Option("threshold", float, minimum=0, maximum=1, default_key="defect.threshold",
                  description="probability above which a pixel is a defect", pictures=inference.PICTURES),
    place=inference.placed,
    result=Inspection,
    sample=inference.SAMPLE_IMAGE,
)

FUNCTIONS: tuple[FunctionSpec, ...] = (LABEL_IMAGE, INFERENCE)
BY_NAME: dict[str, FunctionSpec] = {spec.name: spec for spec in FUNCTIONS}
