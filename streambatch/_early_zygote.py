"""Imported first by ``import streambatch``: starts the zygote (the clean process worker
processes are forked from) in the background, so it imports pyarrow and numpy while
the driver imports its own and the first job's workers start at once. Set
``STREAMBATCH_ZYGOTE=lazy`` to start it only when a job first needs a worker process.
"""

from streambatch.executor.backends.zygote import start_early

start_early()
