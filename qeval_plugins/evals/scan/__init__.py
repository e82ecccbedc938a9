"""``qeval scan``: layer-wise sensitivity to quantization and a mixed-precision recommendation."""
