"""Signatures of a SavedModel as the REST layer sees them: names, dtypes, shapes.

Built from the `SignatureDef` protos of the SavedModel's `serve` meta graph, so
the server validates requests against exactly what TF Serving would read.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "DT_NAMES", "NUMPY_DTYPES", "TensorInfo", "SignatureInfo", "dtype_string",
    "PREDICT_METHOD", "CLASSIFY_METHOD", "REGRESS_METHOD", "DEFAULT_SIGNATURE",
]

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# DataType enum value -> DataTypeString() (tensorflow/core/framework/types.cc).
DT_NAMES = {
    1: "float", 2: "double", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128",
    19: "half", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}

# The dtypes a JSON value converts to (AddValueToTensor in json_tensor.cc).
NUMPY_DTYPES = {
    1: np.dtype(np.float32), 2: np.dtype(np.float64), 3: np.dtype(np.int32),
    4: np.dtype(np.uint8), 5: np.dtype(np.int16), 6: np.dtype(np.int8),
    7: np.dtype(object), 9: np.dtype(np.int64), 10: np.dtype(np.bool_),
    22: np.dtype(np.uint32), 23: np.dtype(np.uint64),
}


def dtype_string(dtype: int) -> str:
    """`DataTypeString(dtype)`: "float", "int64", "string"..."""
    return DT_NAMES.get(dtype, f"unknown dtype enum ({dtype})")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature.

    Attributes:
        dtype: The `tensorflow.DataType` enum value (1 is DT_FLOAT).
        shape: Dimensions with -1 for unknown ones, or `None` for unknown rank.
        tensor_name: The graph tensor name (`serving_default_x:0`).
    """

    dtype: int
    shape: tuple[int, ...] | None
    tensor_name: str = ""

    def compatible_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want < 0 or want == got for want, got in zip(self.shape, shape, strict=True)
        )

    def shape_string(self) -> str:
        return "[?]" if self.shape is None else "[" + ",".join(map(str, self.shape)) + "]"


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """A signature: its method name and named inputs and outputs."""

    name: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]

    @classmethod
    def from_proto(cls, name: str, signature_def) -> SignatureInfo:
        def infos(mapping) -> dict[str, TensorInfo]:
            out = {}
            for key in sorted(mapping):
                info = mapping[key]
                shape_proto = info.tensor_shape
                shape = None if shape_proto.unknown_rank else tuple(
                    int(d.size) for d in shape_proto.dim)
                out[key] = TensorInfo(int(info.dtype), shape, info.name)
            return out

        return cls(name, signature_def.method_name, infos(signature_def.inputs),
                   infos(signature_def.outputs))
