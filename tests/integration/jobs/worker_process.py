"""`python -m tests.integration.jobs.worker_process`: the real worker (`accounts.worker.main`) with the test tasks.

Everything else comes from the environment, as for `accounts worker`: QUEUE_NAME keeps a test's jobs apart.
"""

from __future__ import annotations

from accounts import worker
from accounts.config import Settings
from tests.integration.jobs.tasks import TEST_TASKS


def run() -> None:
    worker.TASKS.update(TEST_TASKS)
    worker.main(Settings.from_env())


if __name__ == "__main__":
    run()
