from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelImageRequest(_message.Message):
    __slots__ = ("image", "k", "id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    k: int
    id: str
    def __init__(self, image: _Optional[bytes] = ..., k: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class InferenceRequest(_message.Message):
    __slots__ = ("image", "threshold", "id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    threshold: float
    id: str
    def __init__(self, image: _Optional[bytes] = ..., threshold: _Optional[float] = ..., id: _Optional[str] = ...) -> None: ...

class LabelImageWithOptionsRequest(_message.Message):
    __slots__ = ("image", "k", "id", "model", "roi", "explain")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROI_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    k: int
    id: str
    model: str
    roi: str
    explain: bool
    def __init__(self, image: _Optional[bytes] = ..., k: _Optional[int] = ..., id: _Optional[str] = ..., model: _Optional[str] = ..., roi: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class InferenceWithOptionsRequest(_message.Message):
    __slots__ = ("image", "threshold", "id", "model", "roi", "explain", "picture")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROI_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    PICTURE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    threshold: float
    id: str
    model: str
    roi: str
    explain: bool
    picture: str
    def __init__(self, image: _Optional[bytes] = ..., threshold: _Optional[float] = ..., id: _Optional[str] = ..., model: _Optional[str] = ..., roi: _Optional[str] = ..., explain: _Optional[bool] = ..., picture: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("confidence", "label")
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    confidence: float
    label: str
    def __init__(self, confidence: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class LabelImageResult(_message.Message):
    __slots__ = ("labels", "id", "error", "model", "version")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    id: str
    error: str
    model: str
    version: str
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., id: _Optional[str] = ..., error: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x", "y", "w", "h", "area")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    H_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    w: int
    h: int
    area: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., w: _Optional[int] = ..., h: _Optional[int] = ..., area: _Optional[int] = ...) -> None: ...

class InferenceResult(_message.Message):
    __slots__ = ("inference_time", "defect", "defects", "width", "height", "base64", "score", "anomalous", "id", "error", "model", "version")
    INFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEFECT_FIELD_NUMBER: _ClassVar[int]
    DEFECTS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BASE64_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ANOMALOUS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    inference_time: float
    defect: int
    defects: _containers.RepeatedCompositeFieldContainer[Box]
    width: int
    height: int
    base64: str
    score: float
    anomalous: bool
    id: str
    error: str
    model: str
    version: str
    def __init__(self, inference_time: _Optional[float] = ..., defect: _Optional[int] = ..., defects: _Optional[_Iterable[_Union[Box, _Mapping]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., base64: _Optional[str] = ..., score: _Optional[float] = ..., anomalous: _Optional[bool] = ..., id: _Optional[str] = ..., error: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadedModel(_message.Message):
    __slots__ = ("function", "name", "version", "loaded_at", "configured", "memory_mb")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    function: str
    name: str
    version: str
    loaded_at: str
    configured: bool
    memory_mb: float
    def __init__(self, function: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., loaded_at: _Optional[str] = ..., configured: _Optional[bool] = ..., memory_mb: _Optional[float] = ...) -> None: ...

class ModelList(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ...) -> None: ...
