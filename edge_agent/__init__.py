"""Edge agent: counts faces on camera devices and estimates gender and age on the device.

Importing the package is cheap; the vision stack loads only in the modules that need it,
so the cloud hub can import :mod:`edge_agent.contract` without OpenCV or model runtimes.
"""

__version__ = "0.1.0"
