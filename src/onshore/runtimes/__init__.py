"""Runtimes: the one interface through which containers are started and stopped."""
