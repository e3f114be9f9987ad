"""The HTTP side: blob uploads and downloads (the web gateway and dashboard come later)."""
