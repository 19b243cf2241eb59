"""``logger.tensorboard=true`` (or ``logger.backends.tensorboard: {}``): TensorBoard event files in
``<run_dir>/tensorboard/`` (:class:`~mtl_cli.train.rundir.TensorBoardSink`), written inline: local
files, and the event writer has its own thread."""

from __future__ import annotations

from typing import Any

from . import LOGGER_BACKENDS, Backend, RunContext, RunEnd


@LOGGER_BACKENDS.register("tensorboard")
class TensorBoardBackend(Backend):
    outputs = ("tensorboard",)
    requires = ("tensorboard",)
    extra = "tensorboard"
    needs = "TensorBoard event files need"
    threaded = False

    def __init__(self, context: RunContext, **kwargs):
        super().__init__(context, **kwargs)
        self.sink: Any = None

    def open(self, kept: list[dict]) -> None:
        from ..rundir import TensorBoardSink

        # the kept records first: the event files mirror metrics.jsonl from its first line
        self.sink = TensorBoardSink(self.context.run_dir / "tensorboard", kept)

    def log(self, records: list[dict]) -> None:
        if self.sink is not None:
            for r in records:
                self.sink.add(r)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    def finish(self, end: RunEnd) -> None:
        self.close()
