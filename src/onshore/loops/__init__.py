"""Reconcile loops: each recomputes what should be from what is, and never dies."""
