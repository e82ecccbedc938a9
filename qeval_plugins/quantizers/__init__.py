"""Built-in quantizer plugins, one module per family; each registers through the public hook."""
