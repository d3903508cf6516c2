"""Scale-out on SLURM through submitit: the engine behind ``python submitit_launch.py``.

- ``launch``: the entry point (``main``) and the single-job commands train / evaluate / prepare.
- ``array``: ``generate`` as one job array (plan, resubmission of missing shards, retries) and ``merge``.
- ``cli``: argument parsing, Hydra composition of conf/<command>.yaml, shared helpers.
- ``executor``: ``cluster=slurm|local|debug`` and ``slurm.<key>=`` resources -> a submitit executor.
- ``shards``: the plan file and the state of each shard's output.
- ``merge``: shard cohorts -> one cohort directory (+ MIMIC-III / MEDS exports).
- ``jobs``: the picklable callables that run on the nodes (``TrainJob`` is requeue-safe).
- ``monitor``: waiting for jobs without ``sacct``.
"""
