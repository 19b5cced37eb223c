"""Explanations (Grad-CAM, integrated gradients) computed on the torch side; results are numpy arrays."""

from medview.explain.gradcam import grad_cam, grad_cam_and_output
from medview.explain.saliency import integrated_gradients

__all__ = ["grad_cam", "grad_cam_and_output", "integrated_gradients"]
