"""Pretraining: the loop (loop.py: `pretrain`) over a run's state (run_state.py), epochs of view
pairs (epochs.py), one optimizer + EMA step (step.py), LARS (optim.py), the lr and tau schedules
(schedules.py), the kNN monitor (monitor.py) and clean stops on signals (signals.py)."""

from byol.training.loop import PretrainResult, build_model, pretrain

__all__ = ["PretrainResult", "build_model", "pretrain"]
