"""The conditional score estimator (CSE) as a plain module."""

from cse.models.cse import build_controlnet, conditioning

__all__ = ["build_controlnet", "conditioning"]
