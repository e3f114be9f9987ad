"""Resources and placement: what each node has, and where a container goes."""
