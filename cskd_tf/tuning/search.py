"""cskd-tune's whole run: check, print the space, search (or serve), write the results.

    DIR/search.json     the search's setup (tuner, objective, full config); a rerun must match
    DIR/keras_tuner/    Keras Tuner's project: oracle state, one folder per trial
                        (trial.json, history.csv, cskd_trial.json, Hyperband checkpoints)
    DIR/tensorboard/    one folder per trial, with its hyperparameters for the HParams tab
    DIR/trials.csv      every trial: hyperparameters, status, objective, metrics, time, error
    DIR/best.json       the best trial's searched fields, for cskd-train --config_overrides
    DIR/summary.json    objective, best trial and value, trial counts, why the search stopped

Rerunning the same command continues an interrupted search: Keras Tuner
reloads its project (overwrite=False), finished trials are kept and the
trial that was running is run again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from cskd_tf import config as config_lib
from cskd_tf.errors import ConfigError, CSKDError, WorkdirError
from cskd_tf.runs import make_folder, write_json_atomic
from cskd_tf.tuning import distributed
from cskd_tf.tuning.space import SearchSpace, objective_direction

TUNERS = ("random", "bayesian", "hyperband")
PROJECT_NAME = "keras_tuner"
# Everything cskd-tune writes in DIR: what --overwrite removes (and nothing else).
OWNED = (PROJECT_NAME, "tensorboard", "trials.csv", "best.json", "search.json", "summary.json")
# Setup entries a rerun may change: more trials, another failure limit, other verbosity.
RESUME_FREE = ("max_trials", "max_consecutive_failed_trials", "config.verbose")


def _say(*parts):
    # Flushed at once: a distributed search's logs interleave, and a chief waits for minutes.
    print(*parts, flush=True)


class SearchFailedError(CSKDError):
    """The search ended without a usable result (every trial failed, or too many in a row)."""

    exit_code = 3


@dataclass
class SearchOptions:
    """cskd-tune's flags other than --config and --workdir."""

    tuner: str = "random"
    max_trials: int = 0  # 0: required for random/bayesian; Hyperband: no cap
    objective: str = "val_accuracy"
    overwrite: bool = False
    max_consecutive_failed_trials: int = 3
    hyperband_factor: int = 3
    hyperband_iterations: int = 1
    chief_wait_s: float = 300.0
    tensorboard: bool = True


def check(config, options: SearchOptions):
    """Everything that needs no TensorFlow: (space, direction, role); ConfigError otherwise."""
    direction = objective_direction(options.objective)
    space = SearchSpace(config)
    if options.tuner not in TUNERS:
        raise ConfigError(f"unknown --tuner {options.tuner!r}; use one of {', '.join(TUNERS)}")
    if options.max_trials < 0:
        raise ConfigError(f"--max_trials must be >= 0 (got {options.max_trials})")
    if options.tuner != "hyperband" and options.max_trials < 1:
        raise ConfigError(f"--tuner={options.tuner} needs --max_trials=N (the number of trials)")
    if options.tuner == "hyperband":
        if options.hyperband_factor < 2:
            raise ConfigError(f"--hyperband_factor must be >= 2 (got {options.hyperband_factor})")
        if options.hyperband_iterations < 1:
            raise ConfigError("--hyperband_iterations must be >= 1 "
                              f"(got {options.hyperband_iterations})")
    if options.max_consecutive_failed_trials < 1:
        raise ConfigError("--max_consecutive_failed_trials must be >= 1 "
                          f"(got {options.max_consecutive_failed_trials})")
    role = distributed.role()
    if role == "worker" and options.overwrite:
        raise ConfigError("--overwrite is for the chief (or a local search); a worker must not "
                          "delete the search the chief is running")
    return space, direction, role


def setup_record(config, options: SearchOptions, direction) -> dict:
    record = {"tuner": options.tuner, "objective": options.objective, "direction": direction,
              "max_trials": options.max_trials,
              "max_consecutive_failed_trials": options.max_consecutive_failed_trials,
              "config": json.loads(config_lib.to_json(config))}
    if options.tuner == "hyperband":
        record.update(hyperband_factor=options.hyperband_factor,
                      hyperband_iterations=options.hyperband_iterations)
    return record


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def check_setup(path, setup: dict):
    """WorkdirError if DIR/search.json records a different search than ``setup``."""
    record_path = os.path.join(path, "search.json")
    try:
        with open(record_path) as f:
            previous = _flatten(json.load(f))
    except (OSError, ValueError):
        return  # no search yet (or the chief is writing it right now)
    current = _flatten(json.loads(json.dumps(setup)))
    changed = sorted(k for k in set(previous) | set(current)
                     if k not in RESUME_FREE and previous.get(k) != current.get(k))
    if changed:
        shown = ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else "")
        raise WorkdirError(
            f"{path} holds a search with another setup ({shown}); rerun it with the same "
            "flags to resume, pass --overwrite to start over, or choose another --workdir")


def prepare_workdir(path, setup: dict, overwrite: bool):
    """Creates DIR, or checks that the search in it is this one; writes DIR/search.json."""
    if overwrite:
        for name in OWNED:
            target = os.path.join(path, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    check_setup(path, setup)
    make_folder(path)
    write_json_atomic(os.path.join(path, "search.json"), setup)


def print_setup(space, options, direction, role, workdir, config):
    _say(f"cskd-tune: {options.tuner} search in {workdir} ({role})")
    _say(f"Objective: {options.objective} ({'maximized' if direction == 'max' else 'minimized'}) "
        "on the validation split, at the last epoch of each trial")
    _say("Search space (config.search):")
    for line in space.describe():
        _say(line)
    if options.tuner == "hyperband":
        from cskd_tf.tuning.tuner import hyperband_brackets

        brackets = hyperband_brackets(config.num_epochs, options.hyperband_factor)
        _say(f"Hyperband: max_epochs=config.num_epochs={config.num_epochs}, "
            f"factor={options.hyperband_factor}, {brackets} bracket(s) x "
            f"{options.hyperband_iterations} iteration(s)"
            + (f", at most {options.max_trials} trials" if options.max_trials else ""))
    else:
        _say(f"Trials: {options.max_trials} of config.num_epochs={config.num_epochs} epochs each")
        size = space.size_hint()
        if size < options.max_trials:
            _say(f"Note: the space has only {int(size)} distinct points; the search stops "
                 "when it runs out of new ones")


def tune(config, workdir, options: SearchOptions, retrain_hint=""):
    """Runs (or resumes, or serves) a search; returns the summary dict (None on a worker)."""
    space, direction, role = check(config, options)
    workdir = os.path.abspath(workdir)
    print_setup(space, options, direction, role, workdir, config)
    setup = setup_record(config, options, direction)
    if role == "chief":
        distributed.check_chief_address()
    if role == "worker":
        # A worker runs whatever the chief's oracle hands out with its own config: refuse
        # to train trials of a search that was set up differently.
        check_setup(workdir, setup)
    else:
        prepare_workdir(workdir, setup, options.overwrite)

    # The slow imports (TensorFlow, Keras Tuner) only after every cheap check passed.
    from cskd_tf.tuning.hypermodel import CSKDHyperModel, TrialData
    from cskd_tf.tuning.tuner import CSKDTuner, make_oracle

    data = None if role == "chief" else TrialData.prepare(config)
    oracle = make_oracle(options.tuner, options.objective, direction, options.max_trials,
                         seed=config.seed, failure_limit=options.max_consecutive_failed_trials,
                         max_epochs=config.num_epochs, hyperband_factor=options.hyperband_factor,
                         hyperband_iterations=options.hyperband_iterations)
    tuner = CSKDTuner(oracle, CSKDHyperModel(space, data), directory=workdir,
                      project_name=PROJECT_NAME, overwrite=False,
                      tensorboard_dir=(os.path.join(workdir, "tensorboard")
                                       if options.tensorboard else None))
    if role != "worker" and oracle.trials:
        done = sum(t.status in ("COMPLETED", "FAILED") for t in oracle.trials.values())
        _say(f"Resuming: {done} finished trial(s) kept, {len(oracle.trials) - done} to run again")

    if role == "chief":
        oracle.announce_starts = True
        _say(f"Chief oracle listening on {distributed.oracle_address()}; start the workers "
             "with the same command and their own KERASTUNER_TUNER_ID")
        tuner.search(verbose=0)  # serves the oracle until every worker is done
    elif role == "worker":
        import grpc

        distributed.wait_for_chief(options.chief_wait_s)
        try:
            tuner.search(verbose=0)  # our oracle prints one line per trial instead
        except grpc.RpcError as error:
            raise SearchFailedError(f"lost the chief oracle at {distributed.oracle_address()} "
                                    f"({error.code().name}); restart the chief with the same "
                                    "command to resume, then this worker") from None
        ran = ", ".join(tuner.ran_trials) or "none"
        _say(f"Worker {tuner.tuner_id} done (trials run here: {ran}); the chief writes "
             f"{os.path.join(workdir, 'trials.csv')} and best.json")
        return None
    else:
        tuner.search(verbose=0)  # our oracle prints one line per trial instead
    return finish(tuner, space, options, direction, workdir, role, retrain_hint)


def finish(tuner, space, options, direction, workdir, role, retrain_hint=""):
    """Writes trials.csv, best.json and summary.json and prints the table."""
    from cskd_tf.tuning import results as results_lib

    oracle = tuner.oracle
    rows = results_lib.trial_rows(oracle, tuner.project_dir, space, direction)
    results_lib.write_csv(os.path.join(workdir, "trials.csv"), rows)
    ranked = results_lib.completed(list(oracle.trials.values()), direction)
    counts = {}
    for trial in oracle.trials.values():
        counts[trial.status] = counts.get(trial.status, 0) + 1
    summary = {"tuner": options.tuner, "objective": options.objective, "direction": direction,
               "trials": counts, "stopped": getattr(oracle, "stop_reason", None),
               "precision": sorted({row["precision"] for row in rows if row["precision"]}),
               "best_trial": None, "best_value": None, "best": None}
    _say("")
    _say(f"Trials ({', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items()))}; "
        "* = best):")
    _say(results_lib.format_table(rows, space, options.objective,
                                 hyperband=options.tuner == "hyperband",
                                 distributed=role == "chief"))
    best_path = os.path.join(workdir, "best.json")
    if ranked:
        best = ranked[0]
        overrides = space.best_overrides(best.hyperparameters.values)
        write_json_atomic(best_path, overrides)
        summary.update(best_trial=best.trial_id, best_value=float(best.score), best=overrides)
        shown = ", ".join(f"{k}={v:.6g}" for k, v in overrides.items())
        _say(f"Best: trial {best.trial_id}, {options.objective}={float(best.score):.6g}, {shown}")
        _say(f"Wrote {os.path.join(workdir, 'trials.csv')} and {best_path}")
        if retrain_hint:
            _say(retrain_hint.format(best=best_path))
    elif os.path.exists(best_path):
        os.remove(best_path)  # a stale best.json would name a trial that is not in the table
    write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    if summary["stopped"]:
        raise SearchFailedError(f"search stopped: {summary['stopped']}; see "
                                f"{os.path.join(workdir, 'trials.csv')} for the errors")
    if not ranked:
        raise SearchFailedError(f"no trial completed; see {os.path.join(workdir, 'trials.csv')} "
                                "for the errors")
    return summary
