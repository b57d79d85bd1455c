"""An interrupted create must not hang while it lets go of its encryption jobs.

The sink's generator is finalised after `EncryptingReader.close()` has shut the pool down
with `cancel_futures=True`; `concurrent.futures.wait` counts such a cancelled job as pending
for ever, and a SIGTERM'd create hung there (seen in CI under load)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from ecarchive.reader import _settle


def test_settle_returns_for_jobs_cancelled_by_shutdown() -> None:
    release = threading.Event()
    pool = ThreadPoolExecutor(1)
    running = pool.submit(release.wait)
    queued: list[Future[None] | None] = [pool.submit(lambda: None) for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f is not None and f.cancelled() for f in queued)
    release.set()
    running.result(timeout=10)

    settler = threading.Thread(target=_settle, args=([*queued, None],), daemon=True)
    settler.start()
    settler.join(timeout=10)
    assert not settler.is_alive(), "_settle hangs on jobs the pool's shutdown cancelled"


def test_settle_waits_for_a_running_job() -> None:
    release = threading.Event()
    finished = threading.Event()

    def job() -> None:
        release.wait()
        finished.set()

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(job)
        settler = threading.Thread(target=_settle, args=([future],), daemon=True)
        settler.start()
        settler.join(timeout=0.2)
        assert settler.is_alive()  # the job still touches its buffer
        release.set()
        settler.join(timeout=10)
        assert not settler.is_alive() and finished.is_set()
