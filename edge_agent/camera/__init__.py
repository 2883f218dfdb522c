"""Frames in: camera, stream and file sources, each frame timed on the stream's clock."""
