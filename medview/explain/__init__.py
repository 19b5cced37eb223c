"""Explanations (Grad-CAM, saliency) computed on the torch side; results are numpy arrays."""

from medview.explain.gradcam import grad_cam, grad_cam_and_output

__all__ = ["grad_cam", "grad_cam_and_output"]
