"""``python -m tunelab.jobs``: run one worker with settings from the environment."""

from tunelab.config import Settings
from tunelab.jobs.worker import run_worker

if __name__ == "__main__":
    run_worker(Settings())
