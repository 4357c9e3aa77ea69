"""Forward models ``A``, noise models, and the measurement that combines them."""

from cse.operators.base import LinearOperator, Operator
from cse.operators.blur import Convolution, GaussianBlur
from cse.operators.linear import BoxInpainting, MatrixOperator, SuperResolution
from cse.operators.measurement import Measurement
from cse.operators.noise import GaussianNoise, Noise, PoissonNoise
from cse.operators.nonlinear_blur import NonlinearBlur, SaturatedBlur

__all__ = [
    "BoxInpainting",
    "Convolution",
    "GaussianBlur",
    "GaussianNoise",
    "LinearOperator",
    "MatrixOperator",
    "Measurement",
    "Noise",
    "NonlinearBlur",
    "Operator",
    "PoissonNoise",
    "SaturatedBlur",
    "SuperResolution",
]
