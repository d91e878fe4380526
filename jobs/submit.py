"""The spark-submit lines of the bulk jobs, for a local run and for Kubernetes, and their CLI.

    python -m jobs.submit score --target local -- --dataset reco
    python -m jobs.submit score --master spark://127.0.0.1:7077 --exec -- --dataset reco
    python -m jobs.submit score --target k8s --image REG/prescore-jobs:1.0 --namespace ns \\
        --exec -- --dataset tags
    python -m jobs.submit score --target operator -- --dataset reco   # SparkApplication YAML
    python -m jobs.submit score --target operator --schedule '30 2 * * *' -- --dataset reco

``make demo`` calls :func:`local_args`; the CronJobs in k8s/ run this module with
``--target k8s --exec``, so the spark-submit line a cluster runs is built at run time from
the one table of jobs (jobs.job_specs) and nowhere else; the (Scheduled)SparkApplication
manifests in k8s/spark-operator/ are this module's ``--target operator`` output, and a
test fails when they differ. What is Kubernetes' own (the cluster-mode line, the Spark pod
templates, the operator's manifests) is jobs.spark_k8s. On Kubernetes, spark-submit in
cluster mode can exit 0 although the driver failed, so ``--exec`` then checks the store:
the job must have published a new version of its dataset.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.job_specs import (
    COMMON_CONF,
    JOBS,
    check_required,
    conf_flags,
    dataset_of,
    job_flags,
    spec,
)
from jobs.spark_k8s import k8s_args, operator_manifest, parse_conf
from prescore.settings import PROJECT_ROOT

SHIPPED_ENV = "environment"  # where an executor unpacks a shipped virtualenv (--archives)
ARCHIVES = (".tar.gz", ".tgz")  # what Spark unpacks with tar, the links in it kept


def standalone_conf(master: str, executor_cores: int | str, executor_memory: str) -> dict[str, str]:
    """A ``spark://`` master's executor sizes (none for local mode, whose one JVM runs
    every task). Its executors run this interpreter, as local mode's workers do."""
    if not master.startswith("spark://"):
        return {}
    return {"spark.executor.cores": str(executor_cores), "spark.executor.memory": executor_memory}


def shipped_env(archive: str) -> tuple[list[str], dict[str, str]]:
    """spark-submit's arguments and settings that run the executors' Python from the
    packed virtualenv ``archive`` (venv-pack's ``.tar.gz``), unpacked beside each
    executor as Spark documents for its cluster managers, instead of a Python installed
    at the same path on every worker. The driver, here, keeps this interpreter. No
    archive: neither; a local file that is not there, or one Spark would unpack without
    its links: ValueError."""
    if not archive:
        return [], {}
    if not archive.endswith(ARCHIVES):
        raise ValueError(
            f"--python-env: {archive}: pack it as .tar.gz (venv-pack -o env.tar.gz): Spark "
            "unpacks a .tar in Java and a zip holds no links, and the virtualenv's python is one"
        )
    if "://" not in archive and not os.path.isfile(archive):
        raise ValueError(f"--python-env: no file {archive} (make one: venv-pack -o env.tar.gz)")
    path = archive if "://" in archive else os.path.abspath(archive)
    return ["--archives", f"{path}#{SHIPPED_ENV}"], {
        "spark.pyspark.python": f"./{SHIPPED_ENV}/bin/python",
        "spark.pyspark.driver.python": sys.executable,
    }


def local_args(
    job: str,
    *,
    master: str = "local[*]",
    driver_memory: str = "2g",
    executor_cores: int | str = 1,
    executor_memory: str = "1g",
    python_env: str = "",
    extra: Sequence[str] = (),
    **params: Any,
) -> list[str]:
    """The arguments after ``spark-submit`` for a run of ``job`` from this machine: in
    local mode, or on a standalone cluster (``spark://``, e.g. jobs.standalone's) with
    executors of ``executor_cores`` and ``executor_memory``, their Python the packed
    virtualenv ``python_env`` where one is given (:func:`shipped_env`)."""
    s = spec(job)
    job_args = [*job_flags(params), *extra]
    check_required(s, job_args)
    sizes = standalone_conf(master, executor_cores, executor_memory)
    archives, python = shipped_env(python_env)
    return [
        "--master",
        master,
        "--name",
        s.app_name(job_args),
        "--driver-memory",
        driver_memory,
        *archives,
        *conf_flags({**COMMON_CONF, **s.conf, **sizes, **python}),
        str(PROJECT_ROOT / s.script),
        *job_args,
    ]


# -- running ---------------------------------------------------------------------------------


def spark_submit_bin() -> str:
    """spark-submit beside this interpreter (the pyspark wheel's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    return beside if os.path.exists(beside) else "spark-submit"


def spark_env(env: Mapping[str, str] | None = None, *, local: bool = True) -> dict[str, str]:
    """The environment spark-submit needs when started from this interpreter, activated
    virtualenv or not: SPARK_HOME of the pyspark wheel beside it (spark-submit's own
    search asks whatever ``python3`` is on PATH), the driver and, for a local run, the
    workers on this interpreter, TensorFlow's banners off. Set values are kept."""
    import pyspark

    out = dict(os.environ if env is None else env)
    out.setdefault("SPARK_HOME", os.path.dirname(pyspark.__file__))
    out.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if local:
        out.setdefault("PYSPARK_PYTHON", sys.executable)
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return utf8_locale(out)


def utf8_locale(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with a UTF-8 locale (``LC_ALL=C.UTF-8`` unless it has one): Java spells
    file names, an images dataset's keys, in the locale's encoding."""
    out = dict(env)
    if not re.search(r"utf-?8", out.get("LC_ALL") or out.get("LANG", ""), re.IGNORECASE):
        out["LC_ALL"] = "C.UTF-8"
    return out


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, *, local: bool = True) -> None:
    """Run ``spark-submit argv``; a non-zero exit raises (CalledProcessError)."""
    cmd = [spark_submit_bin(), *argv]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=spark_env(env, local=local), check=True)


INCREMENTAL = ("--keys", "--where", "--from-miss-log")  # a job's flags that make a delta
STAGE = "--stage"  # a job's flag that keeps its version beside the live one (a canary's)


def published_since(dataset: str, since: str, env: Mapping[str, str], made: str = "version") -> str:
    """The version of ``dataset`` published at or after ``since``: ``made`` "version"
    (switched to), "delta" (an incremental run's, attached to the live version) or
    "staged" (gated and kept beside the live one); raises when there is none (a driver
    that failed may still have exited 0)."""
    from prescore.settings import Settings
    from prescore.store.redis_client import connect
    from prescore.store.versions import Versions

    settings = Settings.from_env(env)
    versions = Versions(connect(settings.redis), dataset, settings.store)
    wanted = {"version": "published"}.get(made, made)
    for info in versions.all():
        if info.status == wanted and (info.published_at or info.finished_at or "") >= since:
            return info.version
    if made == "delta":
        raise SystemExit(
            f"{dataset}: spark-submit returned but no delta was attached since {since} (a run "
            "that chose no rows attaches none; its driver's log says which)"
        )
    raise SystemExit(f"{dataset}: spark-submit returned but no version was {wanted} since {since}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.submit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything after -- is passed to the job itself.",
    )
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--target", choices=("local", "k8s", "operator"), default="local")
    parser.add_argument(
        "--master", default="local[*]", help="local target only: local[N] or spark://HOST:PORT"
    )
    parser.add_argument("--driver-memory", default="2g", help="local target only")
    parser.add_argument(
        "--executor-cores", type=int, default=1, help="local target, spark:// master only"
    )
    parser.add_argument("--executor-memory", default="1g", help="local target, spark:// only")
    parser.add_argument(
        "--python-env",
        default="",
        metavar="ARCHIVE",
        help="local target: the executors' Python from this packed virtualenv (venv-pack "
        "-o env.tar.gz), shipped with --archives; default: the workers' own",
    )
    parser.add_argument("--image", help="jobs image (default: $PRESCORE_JOBS_IMAGE)")
    parser.add_argument("--namespace", help="Kubernetes namespace (default: $POD_NAMESPACE)")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        help="extra Spark setting key=value for the k8s target (also $PRESCORE_SPARK_CONF)",
    )
    parser.add_argument(
        "--schedule", help="operator target: a ScheduledSparkApplication on this cron (UTC)"
    )
    parser.add_argument("--exec", action="store_true", help="run spark-submit, not print")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    extra = argv[cut + 1 :]  # the job's own flags, passed through as they are
    env = os.environ
    image = args.image or env.get("PRESCORE_JOBS_IMAGE", "prescore-jobs:latest")
    namespace = args.namespace or env.get("POD_NAMESPACE", "prescore")

    if args.target == "operator":
        import yaml

        manifest = operator_manifest(
            args.job, image=image, namespace=namespace, extra=extra, schedule=args.schedule
        )
        print(yaml.safe_dump(manifest, sort_keys=False), end="")
        return 0
    if args.target == "local":
        try:
            argv_ = local_args(
                args.job,
                master=args.master,
                driver_memory=args.driver_memory,
                executor_cores=args.executor_cores,
                executor_memory=args.executor_memory,
                python_env=args.python_env,
                extra=extra,
            )
        except ValueError as exc:  # an archive Spark could not use
            parser.error(str(exc))
    else:
        if args.python_env:
            parser.error("--python-env: local target only (the jobs image holds the k8s one)")
        conf = parse_conf(" ".join([env.get("PRESCORE_SPARK_CONF", ""), *args.conf]))
        argv_ = k8s_args(args.job, image=image, namespace=namespace, conf=conf, extra=extra)
    if not args.exec:
        print(shlex.join([spark_submit_bin(), *argv_]))
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        run(argv_, local=args.target == "local")
    except subprocess.CalledProcessError as exc:
        print(f"{args.job}: spark-submit exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    except FileNotFoundError:
        print(f"{args.job}: no spark-submit: install prescore[jobs] (pyspark)", file=sys.stderr)
        return 1
    if args.target == "k8s" and "--dry-run" not in extra:  # a dry run publishes nothing
        dataset = dataset_of(extra)
        made = "delta" if any(flag in extra for flag in INCREMENTAL) else "version"
        made = "staged" if STAGE in extra else made
        version = published_since(dataset, started, env, made)
        print(f"{args.job}: published {dataset} {made} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
