"""Training: the loop (`loop.py`) and the step (`step.py`) first; then what keeps a run safe and resumable:
its setup, resume, stop rules and signals, processes, run dir and metrics."""
