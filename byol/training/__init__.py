"""Pretraining: the loop (loop.py: `pretrain`) over a run's checkpointed state (train_state.py) and
its context (run_context.py: set-up), epochs of view pairs (epochs.py), one optimizer + EMA step
(step.py), LARS (optim.py), the lr and tau schedules (schedules.py), the kNN monitor (monitor.py),
divergence checks (divergence.py), the end of a run (finish.py), clean stops (signals.py), and
several runs trained each once, side by side (side_by_side.py)."""

from byol.training.loop import PretrainResult, build_model, pretrain

__all__ = ["PretrainResult", "build_model", "pretrain"]
