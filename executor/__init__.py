"""Streaming executor: runs physical stages partition by partition on a backend.

This package knows nothing about the Dataset facade or logical operators; it
receives :class:`~streambatch.executor.stage.PhysicalStage` objects and runs
them under one memory budget.
"""
