"""Streaming executor: runs physical stages partition by partition on a backend.

This package knows nothing about the Dataset facade or logical operators; it
receives the stages of :mod:`streambatch.executor.contract` and runs
them under one memory budget.
"""
