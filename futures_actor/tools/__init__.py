"""Offline command-line tools (features export) built on the core code paths."""
