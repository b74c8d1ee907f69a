"""Requests that arrive together are decoded together.

One worker task pulls jobs from a bounded asyncio queue. It takes the first job, then whatever
arrives within `batch_window_ms` (or is already waiting) until the batch holds `max_batch_texts`
texts, and runs the batch's work in a thread: the event loop keeps answering (/health, the page,
a 503 for a full queue) while the model decodes. Jobs with different decoding settings (`group`)
are run as separate batches. A failing batch fails its own requests, never the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from mt.config import ServeConfig


class Batchable(Protocol):
    @property
    def group(self) -> Hashable: ...  # jobs of one group can share a batch

    @property
    def size(self) -> int: ...  # texts it adds to a batch


R = TypeVar("R", bound=Batchable)
A = TypeVar("A")


class Unavailable(Exception):
    """The server cannot take the request now (queue full, shutting down): 503, try again."""


@dataclass
class BatchStats:
    batches: int = 0  # calls of the work function
    requests: int = 0
    texts: int = 0
    largest: int = 0  # requests in the largest batch


@dataclass
class _Job(Generic[R, A]):
    request: R
    answer: asyncio.Future[A]


class Batcher(Generic[R, A]):
    """`await submit(request)` -> its answer; `work(requests)` returns one answer per request."""

    def __init__(self, work: Callable[[list[R]], list[A]], settings: ServeConfig):
        self.work = work
        self.settings = settings
        self.stats = BatchStats()
        self.busy = False  # a batch is being decoded
        self._queue: asyncio.Queue[_Job[R, A]] | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.settings.queue_size)
        self._worker = asyncio.create_task(self._run(), name="mt.serve batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            self._fail([self._queue.get_nowait()], Unavailable("the server is shutting down"))

    async def submit(self, request: R) -> A:
        if self._queue is None or self._worker is None or self._worker.done():
            raise Unavailable("the decoder is not running")
        job: _Job[R, A] = _Job(request, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Unavailable(f"busy: {self.settings.queue_size} requests are waiting; retry shortly") from None
        return await job.answer

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            groups: dict[Hashable, list[_Job[R, A]]] = {}
            for job in jobs:
                groups.setdefault(job.request.group, []).append(job)
            for group in groups.values():
                await self._process(group)

    async def _collect(self) -> list[_Job[R, A]]:
        assert self._queue is not None
        jobs = [await self._queue.get()]
        if not self.settings.batching:
            return jobs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_window_ms / 1000
        texts = jobs[0].request.size
        while texts < self.settings.max_batch_texts:
            try:
                job = self._queue.get_nowait()  # already waiting: take it without waiting
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            jobs.append(job)
            texts += job.request.size
        return jobs

    async def _process(self, jobs: list[_Job[R, A]]) -> None:
        self.busy = True
        try:
            answers = await asyncio.to_thread(self.work, [job.request for job in jobs])
            if len(answers) != len(jobs):
                raise RuntimeError(f"the batch work gave {len(answers)} answers for {len(jobs)} requests")
        except asyncio.CancelledError:  # stop() during a batch: its requests must not wait forever
            self._fail(jobs, Unavailable("the server is shutting down"))
            raise
        except Exception as err:  # the batch's requests get the error; the worker goes on
            self._fail(jobs, err)
        else:
            for job, answer in zip(jobs, answers):
                if not job.answer.done():  # the client may have gone
                    job.answer.set_result(answer)
        finally:
            self.busy = False
            self.stats.batches += 1
            self.stats.requests += len(jobs)
            self.stats.texts += sum(job.request.size for job in jobs)
            self.stats.largest = max(self.stats.largest, len(jobs))

    @staticmethod
    def _fail(jobs: list[_Job[R, A]], err: BaseException) -> None:
        for job in jobs:
            if not job.answer.done():
                job.answer.set_exception(err)
