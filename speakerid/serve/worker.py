"""The embedding worker of ``speakerid serve``: one thread does all the embedding work
(the torch front end, and the encoder in onnxruntime or torch: ``--backend``).

Requests put their decoded waveforms in a bounded queue (:meth:`EmbedWorker.submit`; a full
queue raises :class:`Overloaded`, answered 503) and await a future. The thread takes the
oldest job, then every job already waiting, up to ``max_batch`` waveforms (micro-batching:
no waiting for more to arrive), and embeds them in ONE call of
:func:`speakerid.inference.embed_waves` (the toolkit's one embedding rule, batched by equal
segment length), made unit length like :meth:`speakerid.enroll.speaker_db.SpeakerModel.embed`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    pass


@dataclass
class _Job:
    waves: list
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class EmbedWorker:
    def __init__(self, model, queue_size: int = 64, max_batch: int = 16) -> None:
        self.model = model
        self.max_batch = max(1, int(max_batch))
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._thread = threading.Thread(target=self._run, name="speakerid-embed", daemon=True)
        self.batches = 0
        self.embedded = 0
        self.busy = False
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def embed(self, waves: list) -> np.ndarray:
        """Unit embeddings ``[N, D]`` of the waveforms (1-D float32 tensors at the model's rate)."""
        loop = asyncio.get_running_loop()
        job = _Job(waves, loop.create_future(), loop)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded("the embedding queue is full; retry later") from None
        return await job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, n = [job], len(job.waves)
            while n < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
                n += len(nxt.waves)
            self.busy = True
            try:
                emb = self._embed([w for j in jobs for w in j.waves])
                self.batches += 1
                self.embedded += len(emb)
                start = 0
                for j in jobs:
                    part = emb[start : start + len(j.waves)]
                    start += len(j.waves)
                    j.loop.call_soon_threadsafe(_settle, j.future, part, None)
            except BaseException as e:  # noqa: BLE001 - every waiting request gets the error
                logger.exception("embedding a batch of %d failed", n)
                for j in jobs:
                    j.loop.call_soon_threadsafe(_settle, j.future, None, e)
            finally:
                self.busy = False

    def _embed(self, waves: list) -> np.ndarray:
        import torch

        from speakerid.enroll.records import SpeakerDBError
        from speakerid.scoring.backend import unit_vectors
        from speakerid.inference import SegmentPolicy, embed_waves

        with torch.no_grad():
            emb = embed_waves(self.model.extractor, waves, self.model.policy or SegmentPolicy()).numpy().astype(np.float64)
        if not np.isfinite(emb).all():
            raise SpeakerDBError("the model gives a NaN or infinite embedding for this audio")
        return unit_vectors(emb).astype(np.float32)


def _settle(future: asyncio.Future, value, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
