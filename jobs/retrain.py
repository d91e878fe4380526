"""The retraining pipeline: train, evaluate against the promoted model, gate, score, publish.

    python -m jobs.retrain --data var/data [--run-id ID] [--max-regression 0.005]
        [--epochs E] [--target local|k8s] [--until train|evaluate|gate]

1. train     a candidate ``reco`` model on the data (in this process: TensorFlow), saved
             to the model store, not promoted;
2. evaluate  the candidate and the promoted model on the same held-out events (AUC);
3. gate      promote the candidate only if its AUC is at most ``--max-regression`` below
             the promoted one's (a first model is promoted as is); else stop here;
4. score     every user with the promoted candidate through ``jobs.submit`` (spark-submit,
             local or Kubernetes) and check that the version was published.

Each finished step is recorded under ``{state dir}/{run id}/state.json`` before the next
starts; running again with the same run id (a retried pod, a re-run after a crash) skips
finished steps. The run prints and writes ``report.json``: the metrics of both models,
the decision and why, the version published. ``--until`` stops after a step (a dry run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from jobs import submit
from jobs.retrain_state import RunState, new_run_id
from prescore.modelstore import ModelStore
from prescore.redis_client import connect
from prescore.settings import Settings
from prescore.versions import Versions

MODEL = "reco"
JOB = "score_recommendations"
STEPS = ("train", "evaluate", "gate", "score")


@dataclass(frozen=True)
class Options:
    data: str  # a local folder: training and evaluation read it with pandas
    run_id: str
    state_dir: str
    max_regression: float = 0.005
    epochs: int = 4
    seed: int = 7
    int8: bool = True
    target: str = "local"  # where the bulk scoring runs: local spark-submit or Kubernetes
    master: str = "local[*]"
    driver_memory: str = "2g"
    until: str = "score"
    image: str = "prescore-jobs:latest"
    namespace: str = "prescore"
    spark_conf: str = ""
    score_data: str = ""  # what the bulk job reads (hdfs:// on a cluster); default: data


def log(msg: str) -> None:
    print(f"[retrain] {msg}", flush=True)


def _subprocess_env(settings: Settings) -> dict[str, str]:
    """What spark-submit's job reads: this run's store and model store, as env."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis.url,
        "PRESCORE_REDIS_CLUSTER": "1" if settings.redis.cluster else "0",
        "PRESCORE_MODEL_STORE": settings.models.root,
    }


def step_train(settings: Settings, opts: Options) -> dict[str, Any]:
    from jobs import train_reco

    result = train_reco.train(
        Path(opts.data),
        ModelStore(settings.models),
        epochs=opts.epochs,
        seed=opts.seed,
        promote=False,
        int8=opts.int8,
    )
    return {"version": result.version, "training_metrics": result.metrics}


def evaluate_versions(data: Path, store: ModelStore, versions: list[str]) -> dict[str, Any]:
    """AUC of each model version on the same held-out events, each with its own schema."""
    from jobs.quantize import roc_auc
    from jobs.train_reco import encode_events, load_tables
    from prescore.inference import TFRunner
    from prescore.reco_features import Schema

    tables = load_tables(data)
    test = tables["events_test"]
    y = test["booked"].to_numpy()
    out: dict[str, Any] = {}
    for version in versions:
        ref = store.resolve(MODEL, version)
        x = encode_events(test, tables, Schema.from_dict(ref.meta["schema"]))
        runner = TFRunner(ref.saved_model)
        scores = np.concatenate([runner(x[i : i + 8192]).ravel() for i in range(0, len(x), 8192)])
        out[version] = {"auc": roc_auc(y, scores), "test_events": len(test)}
    return out


def step_evaluate(settings: Settings, opts: Options, candidate: str) -> dict[str, Any]:
    store = ModelStore(settings.models)
    promoted = store.promoted(MODEL)
    versions = [candidate] + ([promoted] if promoted and promoted != candidate else [])
    metrics = evaluate_versions(Path(opts.data), store, versions)
    for version, m in metrics.items():
        log(f"evaluate: reco/{version} AUC {m['auc']:.4f} on {m['test_events']} held-out events")
    current = (
        {"version": promoted, **metrics[promoted]} if promoted and promoted != candidate else None
    )
    return {"candidate": {"version": candidate, **metrics[candidate]}, "promoted": current}


def decide(evaluation: dict[str, Any], max_regression: float) -> tuple[bool, str]:
    """Promote or not, and why; the one rule of the gate."""
    cand = float(evaluation["candidate"]["auc"])
    current = evaluation["promoted"]
    if current is None:
        return True, f"no promoted model yet; candidate AUC {cand:.4f}"
    prev = float(current["auc"])
    if cand >= prev - max_regression:
        return True, (
            f"candidate AUC {cand:.4f} vs promoted {prev:.4f}: within the allowed "
            f"regression of {max_regression:.4f}"
        )
    return False, (
        f"candidate AUC {cand:.4f} vs promoted {prev:.4f}: below the {prev - max_regression:.4f} "
        f"the gate requires (allowed regression {max_regression:.4f}); the promoted model stays"
    )


def step_gate(settings: Settings, opts: Options, evaluation: dict[str, Any]) -> dict[str, Any]:
    store = ModelStore(settings.models)
    before = store.promoted(MODEL)
    promote, reason = decide(evaluation, opts.max_regression)
    candidate = evaluation["candidate"]["version"]
    if promote:
        store.promote(MODEL, candidate)  # idempotent: writes the same name again on a re-run
    log(("PROMOTE " if promote else "KEEP ") + reason)
    return {"promote": promote, "reason": reason, "promoted_before": before}


def _published_for(settings: Settings, model_version: str, since: str) -> str | None:
    v = Versions(connect(settings.redis), "reco", settings.store)
    for info in v.all():
        if (
            info.status == "published"
            and info.model == MODEL
            and info.model_version == model_version
            and (info.published_at or "") >= since
        ):
            return info.version
    return None


def step_score(settings: Settings, opts: Options, state: RunState, model_version: str) -> dict:
    # A crash after the publish but before this step was recorded: do not score again.
    done = _published_for(settings, model_version, state.started_at)
    if done:
        return {"published": done, "note": "found already published by this run"}
    flags = {"data": opts.score_data or opts.data, "model_version": model_version}
    if opts.target == "k8s":
        argv = submit.k8s_args(
            JOB,
            image=opts.image,
            namespace=opts.namespace,
            conf=submit.parse_conf(opts.spark_conf),
            **flags,
        )
    else:
        argv = submit.local_args(JOB, master=opts.master, driver_memory=opts.driver_memory, **flags)
    submit.run(argv, env=_subprocess_env(settings))
    published = _published_for(settings, model_version, state.started_at)
    if published is None:
        raise RuntimeError(f"scoring finished but no reco version from model {model_version}")
    return {"published": published}


def run(settings: Settings, opts: Options) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns the report."""
    state = RunState(opts.state_dir, opts.run_id)
    log(f"run {opts.run_id}: state {state.path}")

    def step(name: str, func: Any, *args: Any) -> dict[str, Any]:
        if state.done(name):
            log(f"{name}: done earlier, skipped")
        else:
            log(f"{name}: starting")
            state.record(name, func(*args))
            log(f"{name}: done")
        return state.result(name)

    train = step("train", step_train, settings, opts)
    if opts.until != "train":
        evaluation = step("evaluate", step_evaluate, settings, opts, train["version"])
        if opts.until != "evaluate":
            gate = step("gate", step_gate, settings, opts, evaluation)
            if opts.until != "gate" and gate["promote"]:
                step("score", step_score, settings, opts, state, train["version"])
    report = build_report(state, opts)
    path = state.write_report(report)
    print(json.dumps(report, indent=2, sort_keys=True))
    log(f"report: {path}")
    return report


def build_report(state: RunState, opts: Options) -> dict[str, Any]:
    steps = state.data["steps"]
    evaluation = steps.get("evaluate", {})
    gate = steps.get("gate", {})
    return {
        "run_id": state.run_id,
        "data": opts.data,
        "max_regression": opts.max_regression,
        "steps_done": [s for s in STEPS if s in steps],
        "candidate": evaluation.get("candidate") or steps.get("train"),
        "promoted_before": evaluation.get("promoted"),
        "decision": ("promote" if gate["promote"] else "keep") if gate else "undecided",
        "reason": gate.get("reason", ""),
        "published_version": steps.get("score", {}).get("published"),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.retrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="local folder of users, hotels and events")
    p.add_argument("--score-data", help="the same data as the bulk job reads it (e.g. hdfs://)")
    p.add_argument("--run-id", help="resume this run (default: a new one; $PRESCORE_RUN_ID)")
    p.add_argument("--state-dir", help="where runs are recorded (default: $PRESCORE_VAR/retrain)")
    p.add_argument("--max-regression", type=float, default=0.005, help="AUC a candidate may lose")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 variant")
    p.add_argument("--target", choices=("local", "k8s"), default="local")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--driver-memory", default="2g")
    p.add_argument("--until", choices=STEPS, default="score", help="stop after this step")
    p.add_argument("--redis-url", help="overrides REDIS_URL")
    p.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ
    settings = Settings.from_env(env)
    if args.redis_url:
        settings = replace(settings, redis=replace(settings.redis, url=args.redis_url))
    if args.model_store:
        settings = replace(settings, models=replace(settings.models, root=args.model_store))
    opts = Options(
        data=args.data,
        score_data=args.score_data or "",
        run_id=args.run_id or env.get("PRESCORE_RUN_ID") or new_run_id(),
        state_dir=args.state_dir or os.path.join(settings.var_dir, "retrain"),
        max_regression=args.max_regression,
        epochs=args.epochs,
        seed=args.seed,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
