"""Placement: claim rows, run the pipeline, place each order once, resolve unknown outcomes
and recover the rows of dead workers (``reconcile.py``)."""
