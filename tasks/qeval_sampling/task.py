"""Entry points for the sampling YAMLs; the implementation lives in qeval_plugins.sampling_task."""

from qeval_plugins.sampling_task import SamplingTask, SensitivitySummaryTask, load_prompts

__all__ = ["SamplingTask", "SensitivitySummaryTask", "load_prompts"]
