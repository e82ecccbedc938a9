"""``qeval run``'s engine: evaluate every model × quantizer spec with lm-eval, resumably and
safely, on this machine (``local``), a SLURM cluster (``slurm``, through submitit) or a Ray
cluster (``ray``).

Before the first run every model, spec, passed-on lm-eval option and task name is checked, and
``--output`` must be a writable folder: a mistake is one line, not a failure per run
(:mod:`.planning`).

Each run of the sweep is one *unit* (:class:`.unit.Unit`, plain picklable data): a fresh
``python -m lm_eval --model qeval ...`` process (memory is fully released between runs) writing
into a private ``.partial-*`` folder of ``DIR/<model>__<spec>/``. The launchers only decide where
and when units run (:mod:`.local`, :mod:`.slurm`, :mod:`.ray_cluster`); what a unit does and
guarantees is the same everywhere:

Resume. A run is skipped when its ``results.json`` holds every requested task and its settings
record ``qeval_run.json`` (:mod:`.settings`: limit, few-shot, seeds, chat template, model args,
versions, ...) matches this sweep's. Results made with other settings, with unknown settings (no
record: an older qeval), or lacking a requested task are never silently reused or replaced: the
sweep refuses before any run, in one line naming the differences, and ``--force`` recomputes and
replaces them (:mod:`.results`).

Safety.

* New results replace the old only once validated (valid JSON holding every requested task);
  otherwise the run is reported failed and nothing is replaced (lm-eval exits 0 even when it could
  not write its results, e.g. on a full disk). The settings record is written first and names the
  results by checksum, then the results are written atomically (temporary file, fsync, rename): a
  crash leaves the old pair, or a pair that counts as unknown settings, never a false match.
* Each run folder has a lock (``.lock``, flock). A second ``qeval run`` on the same ``--output``
  skips a run another one is computing ("being computed by another qeval run (pid N)") and goes
  on with the next, so two sweeps share the work instead of doing it twice. Only the lock holder
  deletes the folder's ``.partial-*`` folders and temporary files: while it holds the lock, any
  that exist were left by a process that died.
* Every attempt keeps its own log, ``lm_eval.<date>-<time>.log``; ``lm_eval.log`` links to the
  latest. A failed run's line names its cause (:mod:`.failures`).
* The lm_eval process dies with the process that started it, ``kill -9`` included (Linux:
  :func:`.child.die_with_parent`).
* Files already in ``--output`` are read only when regular and within a size cap (never a FIFO,
  never a link to a device: :mod:`qeval_plugins.core.safe_read`).
"""
