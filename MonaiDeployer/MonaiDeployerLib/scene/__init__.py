"""Slicer's MRML scene: volume nodes in, labelmap and segmentation nodes out (no Qt)."""
