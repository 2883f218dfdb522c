"""The networks and their data: detection, landmarks, alignment, gender, age, embeddings.

``detections.py`` and ``detector.py`` hold the data types and the detector protocol the
other stages are written against; the rest loads and runs the models.
"""
