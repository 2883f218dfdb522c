"""From detections to people: the tracker, counting lines, aggregation, returning visitors.

Data only (NumPy): nothing here imports a model runtime.
"""
