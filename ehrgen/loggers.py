"""A CSV logger that keeps the metrics history when a run resumes.

Lightning's CSVLogger deletes ``metrics.csv`` when its folder already holds one, so a requeued or
resumed run kept only the steps after the resume. Here the file is kept: on the first save after
a resume, rows at or after the first step the resumed run logs are dropped (the killed run logged
them past its last checkpoint, and the resumed run logs them again), the rest stay.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _HistoryKeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._resumed = self._fs.isfile(self.metrics_file_path)
        if self._resumed:
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def save(self) -> None:
        if self._resumed and self.metrics:
            first = min(int(m["step"]) for m in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                kept = [row for row in csv.DictReader(file) if row.get("step") and int(row["step"]) < first]
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._resumed = False
        super().save()


class ResumableCSVLogger(CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` whose ``metrics.csv`` survives resumes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryKeepingWriter(log_dir=self.log_dir)
        return self._experiment
