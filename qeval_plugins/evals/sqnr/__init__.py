"""``qeval_sqnr``: weight, output and activation divergence against the unquantized model."""
