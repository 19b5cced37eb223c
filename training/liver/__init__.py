"""Paper 001: liver segmentation with the EAS U-Net (depth-wise separable blocks, ASPP + ECA, deep supervision)."""
