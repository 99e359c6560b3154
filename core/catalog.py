"""The plugin's functions, each declared once.

Everything else derives from FUNCTIONS: the SQL functions and their window forms (label_func.py,
batch_func.py), defect.json and functions/*.json (`python -m tools.function_docs` writes them; a
test checks them), the HTTP routes and OpenAPI (service/http_api.py), the gRPC mapping
(service/grpc_messages.py; defect.proto is checked against it) and the client's choices.
Adding a function: docs/development.md.
"""
from core.functions import FunctionSpec, Option
from core.results import Inspection, Label
from inference import DefectSegmenter
from label import ImageLabeler

LABEL_IMAGE = FunctionSpec(
    name="labelImage",
    summary="Label an image: the top k ImageNet classes (TFLite MobileNet v2)",
    section="label",
    model=ImageLabeler,
    run=lambda model, pixels, size, k: model.label(pixels, k),
    option=Option("k", int, minimum=1, model_maximum=lambda model: len(model.labels), bound="the class count",
                  default_key="label.top_k", description="labels to return, best first"),
    result=list[Label],
)

INFERENCE = FunctionSpec(
    name="inference",
    summary="Find surface defects (OpenVINO segmentation): count, boxes and a picture",
    section="defect",
    model=DefectSegmenter,
    run=lambda model, pixels, size, threshold: model.inspect(pixels, threshold, size),
    option=Option("threshold", float, minimum=0, maximum=1, default_key="defect.threshold",
                  description="probability above which a pixel is a defect"),
    result=Inspection,
)

FUNCTIONS: tuple[FunctionSpec, ...] = (LABEL_IMAGE, INFERENCE)
BY_NAME: dict[str, FunctionSpec] = {spec.name: spec for spec in FUNCTIONS}
