"""``python -m tunelab.jobs``: run one worker with settings from the environment."""

from tunelab.allocator import restart_with_jemalloc

if __name__ == "__main__":
    restart_with_jemalloc()  # before torch is imported (allocator.py)

    from tunelab.config import Settings
    from tunelab.jobs.worker import run_worker

    run_worker(Settings())
