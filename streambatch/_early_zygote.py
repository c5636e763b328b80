"""Imported first by ``import streambatch``: tells Arrow's allocator to commit memory on
demand (before pyarrow loads; see ``commit_arrow_memory_on_demand``), then starts the
zygote (the clean process worker processes are forked from) in the background, so it
imports pyarrow and numpy while the driver imports its own and the first job's
workers start at once. Set ``STREAMBATCH_ZYGOTE=lazy`` to start it only when a job
first needs a worker process.
"""

from streambatch.executor.backends.heap import commit_arrow_memory_on_demand

commit_arrow_memory_on_demand()  # before pyarrow loads; the zygote inherits it
from streambatch.executor.backends.zygote import start_early  # noqa: E402

start_early()
