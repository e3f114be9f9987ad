"""Onshore: a self-hosted server for the official Modal client."""

__version__ = "0.1.0"
