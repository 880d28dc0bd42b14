"""The container image built from the repository's Dockerfile with podman and run for real: the
base image's local stand-in (base.py), podman as these machines allow it (podman.py), the same by
hand (`python -m tests.image`), and the test (test_image.py)."""
