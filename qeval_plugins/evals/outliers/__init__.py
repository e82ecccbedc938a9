"""``qeval_outliers``: outlier features (LLM.int8()) of the quantized and the unquantized model."""
