"""`python -m tests.integration.jobs.worker_process`: the real worker (`accounts.worker.main`) with the test tasks.

The queue name comes from TEST_QUEUE_NAME, so a session's jobs never mix with another's on a shared Redis.
"""

from __future__ import annotations

import os

from accounts import worker
from accounts.config import Settings
from tests.integration.jobs.tasks import TEST_TASKS


def run() -> None:
    worker.QUEUE_NAME = os.environ["TEST_QUEUE_NAME"]
    worker.TASKS.update(TEST_TASKS)
    worker.main(Settings.from_env())


if __name__ == "__main__":
    run()
