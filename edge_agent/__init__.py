"""Edge agent: counts faces on camera devices and estimates gender and age on the device.

Importing the package is cheap; the vision stack loads only in the modules that need it,
so the cloud hub can import :mod:`edge_agent.contract` without OpenCV or model runtimes.

It does one thing on import: it quiets OpenCV's and FFmpeg's own logging (unless the
environment already says otherwise). Their lines (``[mov,mp4 @ 0x…] moov atom not
found``, ``[ WARN:0@0.07] global cap.cpp…``) go straight to the terminal, bypass the
agent's structured log and say nothing a user can act on; the agent reports the same
problems itself (``edge_agent.camera.sources.SourceError``). The variables must be in the
environment before OpenCV opens its first video, hence here, before any module imports
``cv2``. Set ``OPENCV_FFMPEG_LOGLEVEL=32`` (or ``OPENCV_LOG_LEVEL=INFO``) to see them.
"""

import os

__version__ = "0.1.0"

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # OpenCV's [ WARN:…] / [ERROR:…] lines
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET for FFmpeg's av_log
