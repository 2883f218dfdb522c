"""Offline tools: accuracy evaluation, the AsyncAPI document, the synthetic demo clip."""
