"""Scale-out on SLURM through submitit: the engine behind ``python submitit_launch.py``.

- ``launch``: the entry point (``main``) and the single-job commands train / evaluate / prepare.
- ``array``: ``generate`` as one job array (plan, resubmission of missing shards, retries) and ``merge``;
  the job-array machinery shared with ``blocks``.
- ``blocks``: ``evaluate ... blocks=N``: the privacy nearest-neighbour search as a job array, then evaluate.
- ``cli``: argument parsing, Hydra composition of conf/<command>.yaml, shared helpers.
- ``executor``: ``cluster=slurm|local|debug`` and ``slurm.<key>=`` resources -> a submitit executor.
- ``shards``: plan files and the state of each shard's output.
- ``merge``: shard cohorts -> one cohort directory (+ MIMIC-III / MEDS exports).
- ``jobs``: the picklable callables that run on the nodes (``TrainJob`` is requeue-safe).
- ``monitor``: waiting for jobs without ``sacct``.
"""
