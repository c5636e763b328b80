"""Which running tasks the no-progress timeout may blame.

A cluster backend (Ray) can hold a submitted task in its own queue for a long
time: the cluster is busy with other jobs, or waits for a node to join. Such a
task is not stuck, so its clock starts at its ``TaskStarted`` event, not at its
submission. Backends that start tasks at once (local) send no TaskStarted; all
their running tasks count.
"""

from __future__ import annotations

from streambatch.executor.backends.base import TaskDone, TaskFailed, TaskStarted


class StartedTasks:
    """Tracks which submitted tasks really started in a worker.

    ``reports_starts``: the backend sends TaskStarted (``Backend.reports_task_starts``).

    >>> t = StartedTasks(reports_starts=True)
    >>> tasks = {1: "queued in the cluster", 2: "running"}
    >>> t.saw(TaskStarted(2))
    >>> t.blamable(tasks)
    ['running']
    >>> t.saw(TaskDone(2, 0.1)); t.blamable(tasks)
    []
    >>> StartedTasks(reports_starts=False).blamable(tasks)
    ['queued in the cluster', 'running']
    """

    def __init__(self, reports_starts: bool) -> None:
        self.reports_starts = reports_starts
        self._ids: set[int] = set()

    def saw(self, event) -> None:
        """Note a backend event."""
        if isinstance(event, TaskStarted):
            self._ids.add(event.task_id)
        elif isinstance(event, (TaskDone, TaskFailed)):
            self._ids.discard(event.task_id)

    def blamable(self, tasks: dict) -> list:
        """The tasks of ``tasks`` (task id -> task) whose no-progress clock runs."""
        if not self.reports_starts:
            return list(tasks.values())
        return [task for task_id, task in tasks.items() if task_id in self._ids]


__all__ = ["StartedTasks"]
