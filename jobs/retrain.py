"""The retraining pipeline of any dataset: train, evaluate, gate, score, publish, promote.

    python -m jobs.retrain --dataset NAME [--run-id ID] [--until train|evaluate|gate|score]
        [--target local|k8s] [--max-regression M]

The dataset declares its training (``[datasets.NAME.training]``, see docs/reference.md):

1. train     the declared ``command`` (``{output}``: the folder to write the model to,
             ``{python}``: this interpreter) or ``entry`` (``module:function(output_dir)``)
             writes a model folder; it is registered as the next version of the
             dataset's model (prescore.models.registration: checked against the dataset), not
             promoted;
2. evaluate  the candidate and the promoted model on the declared held-out table, with
             the declared metric (``auc`` of a 0/1 label, ``map`` of a list of labels);
3. gate      keep going only if the candidate is at most ``max_regression`` worse than
             the promoted one (a first model passes as is); else stop here;
4. score     the bulk job (``jobs.submit``: spark-submit, local or Kubernetes) with the
             candidate, explicitly: it must publish a version made by that model;
5. promote   only then is the candidate promoted, so a run that fails at any step leaves
             the promoted model and the live data from the same model.

Each finished step is recorded under ``{state dir}/{run id}/state.json`` before the next
starts; running again with the same run id (a retried pod, a re-run after a crash) skips
finished steps. The run prints and writes ``report.json``: both models' metrics, the
decision and why, the version published.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs import spark_k8s, submit
from jobs.retrain_state import RunState, new_run_id
from prescore.data.datasets import MAX_REGRESSION_RULE, Dataset
from prescore.errors import ConfigError, PrescoreError, PublishError, one_line
from prescore.models import dataset_feeds
from prescore.models.quality import quality
from prescore.models.signature import Signatures
from prescore.models.store import ModelStore
from prescore.settings import Settings
from prescore.store.redis_client import connect
from prescore.store.versions import Versions

STEPS = ("train", "evaluate", "gate", "score", "promote")


@dataclass(frozen=True)
class Options:
    dataset: str
    run_id: str
    state_dir: str
    max_regression: float | None = None  # default: the dataset's declared margin
    int8: bool = True
    target: str = "local"  # where the bulk scoring runs: local spark-submit or Kubernetes
    master: str = "local[*]"
    driver_memory: str = "2g"
    until: str = "promote"
    image: str = "prescore-jobs:latest"
    namespace: str = "prescore"
    spark_conf: str = ""


def log(msg: str) -> None:
    print(f"[retrain] {msg}", flush=True)


def _training(dataset: Dataset) -> Any:
    if dataset.training is None:
        raise ConfigError(f"dataset {dataset.name} declares no [datasets.{dataset.name}.training]")
    return dataset.training


def step_train(settings: Settings, dataset: Dataset, opts: Options, state: RunState) -> dict:
    """Run the declared training, then register what it wrote (not promoted)."""
    from prescore.models.registration import register

    training = _training(dataset)
    out = state.dir / "model"
    if training.entry:
        module, _, func = training.entry.partition(":")
        try:
            getattr(importlib.import_module(module), func)(str(out))
        except Exception as exc:  # the team's code: its failure in one line, not ours
            raise PrescoreError(
                f"training {training.entry} raised {one_line(exc)}", code="training_failed"
            ) from exc
    else:
        argv = [
            p.replace("{output}", str(out)).replace("{python}", sys.executable)
            for p in training.command
        ]
        log("$ " + " ".join(argv))
        try:
            done = subprocess.run(argv, check=False)
        except OSError as exc:  # no such program, not executable
            raise PrescoreError(
                f"training command {argv[0]!r} cannot run: {exc.strerror or exc}",
                code="training_failed",
            ) from None
        if done.returncode:
            raise PrescoreError(f"training exited with {done.returncode}", code="training_failed")
    registered = register(
        ModelStore(settings.models),
        settings.catalog,
        dataset.model,
        str(out),
        dataset=dataset.name,
        int8=opts.int8,
        webhdfs_url=settings.models.webhdfs_url,
        say=log,
    )
    return {"version": registered.version}


def evaluate_versions(settings: Settings, dataset: Dataset, versions: list[str]) -> dict[str, Any]:
    """Each model version's metric on the same held-out rows."""
    from prescore.models.tf_model import TFModel

    training = _training(dataset)
    if training.heldout is None:
        raise ConfigError(f"dataset {dataset.name}: training declares no heldout table")
    store = ModelStore(settings.models)
    out: dict[str, Any] = {}
    for version in versions:
        ref = store.resolve(dataset.model, version)
        sigs = Signatures.from_json(ref.meta["signature"])
        feed, truth = dataset_feeds.heldout(
            dataset, sigs, ref.meta, training.heldout, training.label, settings.models.webhdfs_url
        )
        model = TFModel(ref.saved_model, ref.meta)
        n = len(truth)
        scores = [model({k: v[i : i + 8192] for k, v in feed.items()}) for i in range(0, n, 8192)]
        value = quality(training.metric, truth, np.concatenate(scores))
        finite = value if math.isfinite(value) else None  # the report is strict JSON
        out[version] = {training.metric: finite, "heldout_rows": n}
    return out


def step_evaluate(settings: Settings, dataset: Dataset, candidate: str) -> dict[str, Any]:
    metric = _training(dataset).metric
    promoted = ModelStore(settings.models).promoted(dataset.model)
    versions = [candidate] + ([promoted] if promoted and promoted != candidate else [])
    metrics = evaluate_versions(settings, dataset, versions)
    for version, m in metrics.items():
        shown = "cannot be computed" if m[metric] is None else f"{m[metric]:.4f}"
        rows = m["heldout_rows"]
        log(f"evaluate: {dataset.model}/{version} {metric} {shown} on {rows} held-out rows")
    current = (
        {"version": promoted, **metrics[promoted]} if promoted and promoted != candidate else None
    )
    return {
        "metric": metric,
        "candidate": {"version": candidate, **metrics[candidate]},
        "promoted": current,
    }


def decide(evaluation: dict[str, Any], max_regression: float) -> tuple[bool, str]:
    """Keep going or not, and why; the one rule of the gate."""
    metric = evaluation.get("metric", "auc")
    cand = _value(evaluation["candidate"][metric])
    current = evaluation["promoted"]
    if cand is None:  # a held-out table of one class, say: nothing to compare
        return False, (
            f"the candidate's {metric} cannot be computed on the held-out rows (does their "
            "label hold both classes?); the promoted model stays"
        )
    if current is None:
        return True, f"no promoted model yet; candidate {metric} {cand:.4f}"
    prev = _value(current[metric])
    if prev is None:  # the promoted model measures nothing here: the candidate does
        return True, f"candidate {metric} {cand:.4f}; the promoted model's cannot be computed"
    if cand >= prev - max_regression:
        return True, (
            f"candidate {metric} {cand:.4f} vs promoted {prev:.4f}: within the allowed "
            f"regression of {max_regression:.4f}"
        )
    return False, (
        f"candidate {metric} {cand:.4f} vs promoted {prev:.4f}: "
        f"below the {prev - max_regression:.4f} "
        f"the gate requires (allowed regression {max_regression:.4f}); the promoted model stays"
    )


def _value(metric: Any) -> float | None:
    """A metric as a number, None where it could not be computed (NaN; JSON's null)."""
    return float(metric) if metric is not None and math.isfinite(float(metric)) else None


def step_gate(dataset: Dataset, opts: Options, evaluation: dict[str, Any]) -> dict[str, Any]:
    margin = (
        opts.max_regression
        if opts.max_regression is not None
        else _training(dataset).max_regression
    )
    passed, reason = decide(evaluation, margin)
    log(("PASS " if passed else "KEEP ") + reason)
    return {"promote": passed, "reason": reason}


def _published_for(
    settings: Settings, dataset: Dataset, model_version: str, since: str
) -> str | None:
    v = Versions(connect(settings.redis), dataset.name, settings.store)
    for info in v.all():
        if (
            info.status == "published"
            and info.model == dataset.model
            and info.model_version == model_version
            and (info.published_at or "") >= since
        ):
            return info.version
    return None


def _subprocess_env(settings: Settings) -> dict[str, str]:
    """What spark-submit's job reads: this run's store, model store and datasets, as env."""
    env = {
        **os.environ,
        "REDIS_URL": settings.redis.url,
        "PRESCORE_REDIS_CLUSTER": "1" if settings.redis.cluster else "0",
        "PRESCORE_MODEL_STORE": settings.models.root,
    }
    if settings.catalog.source:
        env["PRESCORE_CONFIG"] = settings.catalog.source
    return env


def step_score(
    settings: Settings, dataset: Dataset, opts: Options, state: RunState, version: str
) -> dict:
    # A crash after the publish but before this step was recorded: do not score again.
    done = _published_for(settings, dataset, version, state.started_at)
    if done:
        return {"published": done, "note": "found already published by this run"}
    flags = {"dataset": dataset.name, "model_version": version}
    if opts.target == "k8s":
        argv = spark_k8s.k8s_args(
            "score",
            image=opts.image,
            namespace=opts.namespace,
            conf=spark_k8s.parse_conf(opts.spark_conf),
            **flags,
        )
    else:
        argv = submit.local_args(
            "score", master=opts.master, driver_memory=opts.driver_memory, **flags
        )
    submit.run(argv, env=_subprocess_env(settings), local=opts.target == "local")
    published = _published_for(settings, dataset, version, state.started_at)
    if published is None:
        raise PrescoreError(
            f"scoring finished but no {dataset.name} version from model {version}",
            code="publish_failed",
        )
    return {"published": published}


def step_promote(
    settings: Settings, dataset: Dataset, version: str, published: str
) -> dict[str, Any]:
    """Promote the candidate while the version its scores made (``published``) is live:
    the promoted model and the live data come from one model; after a crash and another
    publish in between (a nightly run), the model is not promoted."""
    live = Versions(connect(settings.redis), dataset.name, settings.store).current()
    if live != published:
        raise PublishError(
            f"{dataset.name}: the live version is {live}, not {published} that this run's "
            f"scores made; {dataset.model}/{version} is not promoted (run the retrain again)",
            code="live_changed",
        )
    store = ModelStore(settings.models)
    before = store.promoted(dataset.model)
    store.promote(dataset.model, version)  # idempotent: writes the same name again on a re-run
    log(f"promoted {dataset.model}/{version} (was {before or 'none'}), with its scores live")
    return {"promoted": version, "promoted_before": before}


def run(settings: Settings, opts: Options) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns the report."""
    dataset = settings.catalog.get(opts.dataset)
    state = RunState(opts.state_dir, opts.run_id)
    try:
        return _run(settings, opts, dataset, state)
    finally:
        state.close()


def _run(settings: Settings, opts: Options, dataset: Dataset, state: RunState) -> dict[str, Any]:
    log(f"run {opts.run_id} of {dataset.name}: state {state.path}")

    def step(name: str, func: Any, *args: Any) -> dict[str, Any]:
        if state.done(name):
            log(f"{name}: done earlier, skipped")
        else:
            log(f"{name}: starting")
            state.record(name, func(*args))
            log(f"{name}: done")
        return state.result(name)

    train = step("train", step_train, settings, dataset, opts, state)
    version = train["version"]
    stop = STEPS.index(opts.until)
    if stop >= 1:
        evaluation = step("evaluate", step_evaluate, settings, dataset, version)
        if stop >= 2:
            gate = step("gate", step_gate, dataset, opts, evaluation)
            if stop >= 3 and gate["promote"]:
                scored = step("score", step_score, settings, dataset, opts, state, version)
                if stop >= 4:
                    step("promote", step_promote, settings, dataset, version, scored["published"])
    report = build_report(state, dataset)
    path = state.write_report(report)
    print(json.dumps(report, indent=2, sort_keys=True))
    log(f"report: {path}")
    return report


def build_report(state: RunState, dataset: Dataset) -> dict[str, Any]:
    steps = state.data["steps"]
    evaluation = steps.get("evaluate", {})
    gate = steps.get("gate", {})
    decision = "undecided"
    if gate:
        decision = "promote" if gate["promote"] else "keep"
    return {
        "run_id": state.run_id,
        "dataset": dataset.name,
        "model": dataset.model,
        "steps_done": [s for s in STEPS if s in steps],
        "metric": evaluation.get("metric"),
        "candidate": evaluation.get("candidate") or steps.get("train"),
        "promoted_before": evaluation.get("promoted"),
        "decision": decision,
        "reason": gate.get("reason", ""),
        "published_version": steps.get("score", {}).get("published"),
        "promoted": steps.get("promote", {}).get("promoted"),
    }


def _regression(text: str) -> float:
    """``--max-regression``, as the dataset's ``max_regression`` is bounded."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: {MAX_REGRESSION_RULE}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.retrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="a declared dataset with a training section")
    p.add_argument("--run-id", help="resume this run (default: a new one; $PRESCORE_RUN_ID)")
    p.add_argument("--state-dir", help="where runs are recorded (default: $PRESCORE_VAR/retrain)")
    p.add_argument(
        "--max-regression", type=_regression, help="how much worse a candidate may be (0 to 1)"
    )
    p.add_argument("--no-int8", dest="int8", action="store_false", help="build no LiteRT variant")
    p.add_argument("--target", choices=("local", "k8s"), default="local")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--driver-memory", default="2g")
    p.add_argument("--until", choices=STEPS, default="promote", help="stop after this step")
    p.add_argument("--redis-url", help="overrides REDIS_URL")
    p.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")
    p.add_argument("--config", help="the dataset declarations (overrides PRESCORE_CONFIG)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ
    try:
        settings = Settings.from_env(env).with_overrides(
            args.redis_url, args.model_store, args.config, env
        )
        opts = Options(
            dataset=args.dataset,
            run_id=args.run_id or env.get("PRESCORE_RUN_ID") or new_run_id(),
            state_dir=args.state_dir or os.path.join(settings.var_dir, "retrain"),
            max_regression=args.max_regression,
            int8=args.int8,
            target=args.target,
            master=args.master,
            driver_memory=args.driver_memory,
            until=args.until,
            image=env.get("PRESCORE_JOBS_IMAGE", "prescore-jobs:latest"),
            namespace=env.get("POD_NAMESPACE", "prescore"),
            spark_conf=env.get("PRESCORE_SPARK_CONF", ""),
        )
        run(settings, opts)
    except PrescoreError as exc:
        log(f"failed: {exc.code}: {exc.message}")
        return 1
    except subprocess.CalledProcessError as exc:
        log(f"failed: spark-submit exited with {exc.returncode}")
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
