"""Entry points for the sampling YAMLs; the implementation: qeval_plugins.evals.sampling.task."""

from qeval_plugins.evals.sampling.task import SamplingTask, SensitivitySummaryTask, load_prompts

__all__ = ["SamplingTask", "SensitivitySummaryTask", "load_prompts"]
