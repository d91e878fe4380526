"""The bulk jobs prescore submits to Spark, in one table: each job's script, the flags a run
must pass, its size on a cluster and the Spark settings every run gets; and how a run's
flags are written and read (job_flags, conf_flags, dataset_of). jobs.submit renders them
for a run from this machine, jobs.spark_k8s for one on Kubernetes. A bad job name or a
missing flag exits with a one-line message (SystemExit): these serve command lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Spark settings every run gets, locally and on Kubernetes.
COMMON_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",  # the model is loaded once per Python worker
    "spark.log.level": "WARN",  # the jobs print their own progress and summary
    "spark.ui.showConsoleProgress": "false",
    # TensorFlow's start-up banners, once per Python worker, would bury the job's output
    "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
    # a UTF-8 locale, so that Java spells file names (image keys) outside ASCII
    "spark.executorEnv.LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class JobSpec:
    """A bulk job: its script, the flags a run needs, and its size on a cluster."""

    name: str
    script: str  # relative to the project root
    required: tuple[str, ...]  # job flags a run must pass (without the leading --)
    executors: int = 2
    executor_cores: int = 2
    # An executor pod's memory is the sum of these three. The JVM heap only reads the
    # inputs and hands Arrow batches over; the model runs in the Python workers, which
    # Spark counts only through spark.executor.pyspark.memory: left unset, TensorFlow's
    # memory comes out of the overhead, and a Python worker that outgrows it gets the
    # whole pod OOMKilled (exit 137, no Python error). Set, Spark adds it to the pod's
    # memory and caps each Python worker's address space at its share (this divided by
    # the executor cores), so a worker that outgrows it fails its task with a MemoryError
    # in the log instead.
    executor_memory: str = "3g"  # JVM heap
    executor_memory_overhead: str = "1g"  # JVM off-heap: Arrow buffers, netty, metaspace
    executor_pyspark_memory: str = "6g"  # the Python workers: TensorFlow, decoded images
    driver_memory: str = "2g"
    # The driver's Python (plans the run, holds the candidate items, loads the model's
    # signature) has no pyspark.memory of its own: it lives in the overhead.
    driver_memory_overhead: str = "2g"
    conf: Mapping[str, str] = field(default_factory=dict)

    def app_name(self, job_args: Sequence[str] = ()) -> str:
        """``prescore-score-reco``: the job and, where the flags name one, its dataset."""
        dataset = _dataset_flag(job_args)
        return "-".join(p for p in ("prescore", self.name.replace("_", "-"), dataset) if p)


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            name="score",
            script="jobs/score.py",
            required=("dataset",),
            executors=4,
            # many small image files: pack them by size, not at Spark's 4 MB cost per file
            conf={
                "spark.sql.files.maxPartitionBytes": "16m",
                "spark.sql.files.openCostInBytes": "64k",
            },
        ),
    )
}


def _dataset_flag(job_args: Sequence[str]) -> str:
    for i, arg in enumerate(job_args):
        if arg == "--dataset" and i + 1 < len(job_args):
            return job_args[i + 1]
        if arg.startswith("--dataset="):
            return arg.split("=", 1)[1]
    return ""


def dataset_of(job_args: Sequence[str]) -> str:
    """The ``--dataset`` a run's flags name."""
    dataset = _dataset_flag(job_args)
    if not dataset:
        raise SystemExit("the job's flags name no --dataset")
    return dataset


def spec(name: str) -> JobSpec:
    try:
        return JOBS[name]
    except KeyError:
        raise SystemExit(f"unknown job {name!r}; known: {', '.join(sorted(JOBS))}") from None


def job_flags(params: Mapping[str, Any]) -> list[str]:
    """``{"top_k": 10}`` -> ``["--top-k", "10"]``; None values are left out."""
    out: list[str] = []
    for key, value in params.items():
        if value is not None:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out


def check_required(job: JobSpec, job_args: Sequence[str]) -> None:
    given = {a.split("=", 1)[0] for a in job_args}
    missing = [r for r in job.required if "--" + r.replace("_", "-") not in given]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise SystemExit(f"{job.name}: missing job flag(s): {flags}")


def conf_flags(conf: Mapping[str, str]) -> list[str]:
    return [a for k, v in conf.items() for a in ("--conf", f"{k}={v}")]
