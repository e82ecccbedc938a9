"""``qeval report``: load -> compare -> sections -> render | export | plot.

Modules, bottom up: ``values`` (reading untrusted JSON values), ``runs`` (a run and its
metrics), ``impossible`` (figures and settings that cannot be true, dropped), ``labels`` (run
labels, model names), ``settings`` (recorded evaluation settings and their differences),
``load`` (results files → runs), ``inputs`` (runs and scan files of ``qeval report``'s paths),
``comparison`` (the records: ``Score``, ``Row``, ``Comparison``, ``Report``), ``compare``
(baselines, deltas, significance), ``grid`` (the table cells every view draws, numbers as
text), ``chart`` (what every chart shares), ``section`` (the shape of a section) and the
sections themselves, in ``sections.SECTIONS`` order: ``summary``, ``sqnr``, ``sensitivity``,
``outliers``, ``scan``; then ``layout`` (grids as terminal lines), ``render`` (terminal),
``data`` (the report as JSON-safe data), ``output`` (``--out`` destinations, safe writes),
``file_formats`` (the export formats' names and extensions, read by the CLI at start-up),
``export`` (Markdown, CSV, JSON, HTML), ``plot`` (PNG charts), ``demo_table`` (the ``qeval
demo`` table).

A new section is one module with a :class:`~.section.Section` and one entry in
:data:`~.sections.SECTIONS`; the views only loop over that list.

May import: ``core``, ``metrics``, ``storage``; never the backend, torch or lm-eval at module
level (``qeval report`` stays instant and runs without a model library).
"""
