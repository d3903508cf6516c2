#!/usr/bin/env python
"""Run ehrgen on a SLURM cluster through submitit (the logic lives in ehrgen.cluster).

    python submitit_launch.py generate ckpt=CKPT n_patients=1000000 shards=100 out_dir=OUT
    python submitit_launch.py merge out_dir=OUT [formats=[cohort,mimic3,mimic4,meds]]
    python submitit_launch.py train [train overrides] [paths.run_dir=RUN]
    python submitit_launch.py evaluate real=COHORT synthetic=COHORT out_dir=OUT [blocks=N]
    python submitit_launch.py prepare [prepare overrides]

Common: cluster=slurm|local|debug, slurm.<key>=<value> (conf/cluster/slurm.yaml), --dry-run, --no-wait.
"""

from ehrgen.cluster.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
