"""Frames in: camera and file sources, and the scheduler that shares the cores among them."""
