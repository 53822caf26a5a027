"""Several workers on one study in a real PostgreSQL server: a worker killed mid-trial has its
trial marked failed (heartbeat) and retried once by another, and the study completes with every
trial accounted for. The workers run the search's own storage and trial loop
(flows.search.study.open_storage, run_trials) around a cheap objective, so the test is about
distribution, not training."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests import postgres

pytestmark = pytest.mark.skipif(postgres.why_unavailable() is not None,
                                reason=str(postgres.why_unavailable()))

TRIALS = 10
WORKER = textwrap.dedent('''
    import os, sys, time
    import optuna
    from flows.search.study import STUDY_NAME, open_storage, run_trials

    url, log, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(url, heartbeat_s=1, grace_s=3),
                              sampler=optuna.samplers.RandomSampler(seed=os.getpid()))

    def objective(trial):
        x = trial.suggest_int("x", 0, 10**6)
        with open(log, "a") as f:
            f.write(f"{trial.number} {os.getpid()}\\n")
        time.sleep(pause)
        trial.set_constraint("accuracy", 0.0)
        trial.set_constraint("fits", 0.0)
        return float(x), float(10**6 - x)

    run_trials(study, objective, int(sys.argv[4]))
''')


def started(log) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]


def test_killed_worker_trial_is_failed_retried_and_accounted(tmp_path):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from flows.search.study import STUDY_NAME, open_storage

    script, log = tmp_path / "worker.py", tmp_path / "started.log"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(os.getcwd())}
    with postgres.Server() as url:
        optuna.create_study(storage=open_storage(url, 1, 3), study_name=STUDY_NAME, directions=["minimize"] * 2)
        doomed = subprocess.Popen([sys.executable, str(script), url, str(log), "1.0", str(TRIALS)], env=env)
        survivor = subprocess.Popen([sys.executable, str(script), url, str(log), "1.0", str(TRIALS)], env=env)
        deadline = time.time() + 120
        while sum(1 for _, pid in started(log) if pid == doomed.pid) < 2 and time.time() < deadline:
            time.sleep(0.05)
        doomed.send_signal(signal.SIGKILL)  # in the middle of its second trial
        doomed.wait()
        assert survivor.wait(timeout=180) == 0
        study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(url, 1, 3))
        trials = study.get_trials(deepcopy=False)
    runs = started(log)
    killed = max(n for n, pid in runs if pid == doomed.pid)
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == by_number[killed].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= TRIALS
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL}  # nothing left running or waiting
    numbers = [n for n, _ in runs]
    assert len(numbers) == len(set(numbers)) == len(trials)  # every trial started once, under its own number
    assert {pid for _, pid in runs} == {doomed.pid, survivor.pid}  # both workers worked on the one study
