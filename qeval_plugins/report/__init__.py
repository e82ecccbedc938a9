"""``qeval report``: reading results files, comparing runs, rendering, exporting, plotting.

Modules, bottom up: ``values`` (reading untrusted JSON values, :func:`printable`), ``runs`` (a run
and its metrics), ``figures`` (impossible figures and settings dropped), ``labels`` (run labels,
model names), ``settings`` (recorded evaluation settings and their differences), ``load`` (results
files → runs), ``sensitivity`` and ``sqnr`` (the sampling sweeps and the SQNR figures of a model's
runs), ``compare`` (baselines, deltas, significance: the ``Report``), ``data`` (the report as
JSON-safe data), ``grid`` (the table cells every view draws, numbers as text), ``tables`` (the
report's grids), ``render`` (terminal), ``output`` (``--out`` destinations, safe writes), ``export``
(Markdown, CSV, JSON, HTML), ``plot`` (PNG charts), ``demo_table`` (the ``qeval demo`` table).

May import: ``core``, ``metrics``, ``storage``; never the backend, torch or lm-eval at module
level (``qeval report`` stays instant and runs without a model library).
"""
