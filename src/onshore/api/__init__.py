"""Thin gRPC handlers, one module per RPC domain: decode, call a service, encode."""
