"""Pure math on tensors and texts: divergence (SQNR, KL, NLL), text metrics, metric directions.

May import: nothing of qeval's (torch and the metric libraries only).
"""
