"""The Keras Tuner side of cskd-tune: the oracles and the Tuner that runs one trial."""

from __future__ import annotations

import gc
import logging
import os
import time
import traceback

import keras
import keras_tuner
import tensorflow as tf

from cskd_tf import compat, progress, runtime
from cskd_tf.errors import ConfigError, NonFiniteLossError
from cskd_tf.tuning import results as results_lib

CHECKPOINT_NAME = "cskd_checkpoint"


# --------------------------------------------------------------------------- oracles


class _CSKDOracle:
    """Oracle mixin: one line per finished trial, and a failure limit that stops cleanly.

    The line is printed where the oracle lives (the local process or the chief), so a
    distributed chief logs every trial's outcome; Keras Tuner's own multi-line display
    is turned off (make_oracle sets verbose=0).

    Keras Tuner's own failure limit (``max_consecutive_failed_trials``) raises inside
    ``end_trial`` before the trial is saved and released, which crashes a local search
    and leaves a distributed chief waiting for that trial forever. Capping
    ``max_trials`` after ``failure_limit`` consecutive failures instead lets every
    tuner finish and receive STOPPED normally.
    """

    failure_limit = 3
    stop_reason = None
    announce_starts = False  # the chief: say which worker got which trial
    project_dir = None  # set by CSKDTuner: where the trials' folders are
    # For the pace in each line: when this process handed out its first trial, and how
    # many trials had finished before (a resumed search's took no time here).
    cskd_started_at = None
    cskd_finished_before = 0

    def reload(self):
        super().reload()
        # Keras Tuner writes a new trial's file before its own state. A process killed
        # between the two leaves a RUNNING trial that the state (start_order) does not
        # know; Keras Tuner would count it but never run it. The saved state is from
        # before that trial was drawn, so forgetting the trial makes the next
        # create_trial draw it again: the same id and the same values.
        started = set(self.start_order)
        for trial_id in [t for t in self.trials if t not in started]:
            del self.trials[trial_id]

    def trial_dir(self, trial_id):
        return os.path.join(self.project_dir, f"trial_{trial_id}")

    def progress_text(self):
        """``3/10 trials, 81.3 s/trial, ETA 9m29s``: the pace since this process's first trial."""
        finished = _finished(self.trials)
        here = finished - self.cskd_finished_before
        total = self.max_trials or None
        count = f"{finished}/{total}" if total else f"{finished}"
        if self.cskd_started_at is None:
            return f"{count} trials"
        total_here = here + max(total - finished, 0) if total else None
        return (f"{count} trials, "
                + progress.rate_and_eta(here, total_here,
                                        time.monotonic() - self.cskd_started_at, "trials"))

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        if self.cskd_started_at is None:
            self.cskd_started_at = time.monotonic()
            self.cskd_finished_before = _finished(self.trials)
        trial = super().create_trial(tuner_id)
        if self.announce_starts and trial.status == "RUNNING":
            values = ", ".join(f"{k}={_short(v)}" for k, v in trial.hyperparameters.values.items()
                               if not k.startswith("tuner/"))
            print(f"[cskd-tune] trial {trial.trial_id} -> {tuner_id}: {values}", flush=True)
        return trial

    @keras_tuner.synchronized
    def end_trial(self, trial):
        super().end_trial(trial)
        trial = self.trials[trial.trial_id]
        if trial.status == "COMPLETED":
            ranked = results_lib.completed(list(self.trials.values()), self.objective.direction)
            best = ranked[0] if ranked else trial
            print(f"[cskd-tune] trial {trial.trial_id} COMPLETED: {self.objective.name}="
                  f"{_short(trial.score)} (best so far: trial {best.trial_id}, "
                  f"{_short(best.score)}) [{self.progress_text()}]", flush=True)
        elif trial.status == "FAILED":
            record = results_lib.read_record(self.trial_dir(trial.trial_id))
            error = record.get("error") or results_lib.last_line(trial.message)
            print(f"[cskd-tune] trial {trial.trial_id} FAILED: {error} "
                  f"[{self.progress_text()}]", flush=True)
        if not self.failure_limit or self.stop_reason is not None:
            return
        run = 0
        for trial_id in reversed(self.end_order):
            if self.trials[trial_id].status != "FAILED":
                break
            run += 1
        if run >= self.failure_limit:
            self.stop_reason = (f"{run} consecutive trials failed (the limit is "
                                f"--max_consecutive_failed_trials={self.failure_limit})")
            print(f"[cskd-tune] stopping: {self.stop_reason}", flush=True)
            self.max_trials = len(self.trials)


def _finished(trials) -> int:
    return sum(t.status in ("COMPLETED", "FAILED", "INVALID") for t in trials.values())


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class RandomOracle(_CSKDOracle, keras_tuner.oracles.RandomSearchOracle):
    pass


class BayesianOracle(_CSKDOracle, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(_CSKDOracle, keras_tuner.oracles.HyperbandOracle):
    pass


def hyperband_brackets(max_epochs: int, factor: int) -> int:
    """Number of brackets in one Hyperband iteration (Keras Tuner's rule)."""
    epochs, brackets = float(max_epochs), 0
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    return brackets


def make_oracle(name, objective, direction, max_trials, seed, failure_limit, max_epochs=1,
                hyperband_factor=3, hyperband_iterations=1):
    """The oracle of ``name``; Keras Tuner's own failure limit is replaced by ours."""
    kt_objective = keras_tuner.Objective(objective, direction=direction)
    # seed + 1: Keras Tuner takes a seed of 0 as "draw one at random", and config.seed is
    # often 0; the same config must give the same trials in every process and rerun.
    # max_consecutive_failed_trials is effectively off: _CSKDOracle applies the limit.
    common = dict(objective=kt_objective, seed=int(seed) + 1, max_retries_per_trial=0,
                  max_consecutive_failed_trials=10**9)
    if name == "random":
        oracle = RandomOracle(max_trials=max_trials, **common)
    elif name == "bayesian":
        oracle = BayesianOracle(max_trials=max_trials, **common)
    elif name == "hyperband":
        oracle = HyperbandOracle(max_epochs=int(max_epochs), factor=int(hyperband_factor),
                                 hyperband_iterations=int(hyperband_iterations), **common)
        # Hyperband has no max_trials argument; the base oracle still honours the cap.
        oracle.max_trials = max_trials or None
    else:
        raise ConfigError(f"unknown --tuner {name!r}; use random, bayesian or hyperband")
    oracle.failure_limit = int(failure_limit)
    # Keras Tuner's multi-line display is replaced by _CSKDOracle's one line per trial
    # (as search(verbose=0) does; set here too for an oracle used without search()).
    oracle.verbose = 0
    return oracle


# --------------------------------------------------------------------------- tuner


class _TrialRetraceFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls ... triggered tf.function retracing".

    Every trial builds a new model, so the evaluation function (cached per model) is
    traced once per trial by design; TensorFlow counts those as excessive retracing.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


class CSKDTuner(keras_tuner.Tuner):
    """Runs trials of a :class:`CSKDHyperModel`: build, (Hyperband) restore, fit, record.

    Each trial writes TensorBoard logs with its hyperparameters (the HParams dashboard
    compares trials) under ``tensorboard_dir/trial_<id>``, a per-epoch history.csv in
    its Keras Tuner folder, and the record results.py reads (time, tuner, error). A
    diverging trial (NonFiniteLossError) is reported as FailedTrialError, so Keras
    Tuner marks it FAILED, does not retry it, and the search goes on.
    """

    def __init__(self, oracle, hypermodel, directory, project_name="keras_tuner",
                 overwrite=False, tensorboard_dir=None):
        # Keras Tuner prints the traceback of every failed trial; run_trial prints it for
        # unexpected errors only, not for divergence.
        compat.quiet_failed_trial_tracebacks()
        if not any(isinstance(f, _TrialRetraceFilter) for f in tf.get_logger().filters):
            tf.get_logger().addFilter(_TrialRetraceFilter())
        self.cskd_hypermodel = hypermodel
        self.tensorboard_dir = tensorboard_dir
        self.ran_trials = []  # trial ids this process ran, for a worker's closing line
        # Keras Tuner's __init__ builds the hypermodel to discover the space; ours is
        # declared by the config, so that build declares values and makes no model.
        hypermodel.declaring_only = True
        try:
            super().__init__(oracle=oracle, hypermodel=hypermodel, directory=directory,
                             project_name=project_name, overwrite=overwrite)
        finally:
            hypermodel.declaring_only = False
        oracle.project_dir = self.project_dir

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        values = hp.values
        config = self.cskd_hypermodel.space.config
        epochs = int(values.get("tuner/epochs", config.num_epochs))
        initial_epoch = int(values.get("tuner/initial_epoch", 0))
        trial_dir = self.get_trial_dir(trial.trial_id)
        # The policy the trial trains under (config.mixed_precision resolved on this worker),
        # so trials.csv says which runs were not float32.
        record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id, "epochs": epochs,
                  "initial_epoch": initial_epoch, "precision": runtime.precision()}
        self.ran_trials.append(trial.trial_id)
        shown = ", ".join(f"{k}={v:.6g}" for k, v in values.items()
                          if not k.startswith("tuner/"))
        print(f"[cskd-tune] trial {trial.trial_id} on {self.tuner_id}: epochs "
              f"{initial_epoch + 1}..{epochs} with {shown}", flush=True)
        start = time.monotonic()
        try:
            # A fresh Keras state per trial so graphs and names do not pile up.
            keras.backend.clear_session()
            gc.collect()
            model = self.cskd_hypermodel.build(hp)
            if "tuner/trial_id" in values:
                self._restore(model, values["tuner/trial_id"])
            results = self.cskd_hypermodel.fit(hp, model, epochs=epochs,
                                               initial_epoch=initial_epoch,
                                               callbacks=self._trial_callbacks(trial, trial_dir))
            if "tuner/epochs" in values:
                # A later Hyperband round continues this trial from here.
                self._checkpoint(model, trial_dir)
        except NonFiniteLossError as error:
            record.update(seconds=time.monotonic() - start, status="FAILED", error=str(error))
            results_lib.write_record(trial_dir, record)
            raise keras_tuner.errors.FailedTrialError(str(error)) from error
        except Exception as error:
            # Keras Tuner's own traceback print is off (see __init__); an unexpected error
            # keeps its traceback, a divergence above does not need one.
            traceback.print_exc()
            message = str(error).strip().splitlines()
            record.update(seconds=time.monotonic() - start, status="FAILED",
                          error=f"{type(error).__name__}: {message[-1] if message else ''}")
            results_lib.write_record(trial_dir, record)
            raise
        seconds = time.monotonic() - start
        record.update(seconds=seconds, status="COMPLETED")
        results_lib.write_record(trial_dir, record)
        results["seconds"] = seconds
        return results

    def _trial_callbacks(self, trial, trial_dir):
        callbacks = [keras.callbacks.CSVLogger(os.path.join(trial_dir, "history.csv"),
                                               append=True)]
        if self.tensorboard_dir:
            from tensorboard.plugins.hparams import api as hparams_api

            logdir = os.path.join(self.tensorboard_dir, f"trial_{trial.trial_id}")
            hparams = {k: v for k, v in trial.hyperparameters.values.items()
                       if not k.startswith("tuner/")}
            callbacks += [keras.callbacks.TensorBoard(logdir, write_graph=False, profile_batch=0),
                          hparams_api.KerasCallback(logdir, hparams, trial_id=trial.trial_id)]
        return callbacks

    def _checkpoint(self, model, trial_dir):
        # Model and optimizer (momentum, step counter), as cskd-train's resume keeps them,
        # so the continued trial's learning-rate schedule picks up at the right epoch.
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        checkpoint.write(os.path.join(trial_dir, CHECKPOINT_NAME))

    def _restore(self, model, from_trial_id):
        path = os.path.join(self.get_trial_dir(from_trial_id), CHECKPOINT_NAME)
        if not tf.io.gfile.exists(path + ".index"):
            raise FileNotFoundError(f"trial {from_trial_id}'s checkpoint {path} is missing (a "
                                    "distributed Hyperband search needs a shared --workdir)")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        checkpoint.read(path).assert_existing_objects_matched()

    def load_model(self, trial):
        # Keras Tuner's get_best_models() loads its own per-epoch checkpoints, which this
        # tuner does not write (they would cost a save per epoch and trial).
        raise NotImplementedError("cskd-tune keeps no trained model per trial; retrain the "
                                  "best one with cskd-train --config_overrides=DIR/best.json")
