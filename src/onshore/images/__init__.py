"""Image builds: Dockerfile-command layers become built images for a runtime, cached by content."""
