"""Forward models ``A`` (DESIGN §3)."""

from cse.operators.base import LinearOperator, Operator
from cse.operators.blur import Convolution, GaussianBlur
from cse.operators.linear import BoxInpainting, MatrixOperator, SuperResolution
from cse.operators.noise import GaussianNoise

__all__ = [
    "BoxInpainting",
    "Convolution",
    "GaussianBlur",
    "GaussianNoise",
    "LinearOperator",
    "MatrixOperator",
    "Operator",
    "SuperResolution",
]
