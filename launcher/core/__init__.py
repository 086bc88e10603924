"""The bottom layer: exit codes and errors, where bundled files are, and the trust model's file helpers."""
