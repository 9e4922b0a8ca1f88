"""Orchestration: the command, a run's plan and execution, resume, the run record, tracking."""
