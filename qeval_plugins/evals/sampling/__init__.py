"""The sampling-sensitivity tasks: temperature, top_k and max_new_tokens sweeps."""
