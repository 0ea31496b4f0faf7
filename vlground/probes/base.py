"""What a probe is: options, typed rows, the capabilities it needs, and ``run(ctx)``.

A probe is one analysis of one checkpoint. It never loops over checkpoints, caches or draws
progress bars (that is :mod:`vlground.probes.runner`), and it never writes files: it returns a
:class:`ProbeResult` whose rows are dataclasses, so every column has one definition.

Layer numbers in every row a user reads are **1-based**: layer ``k`` is the output of the
``k``-th block of the model (``vlground.mechanism.sites.layer_number``); layer 0, where it appears
(the tuned lens), is the embedding output.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from vlground.engine.adapter import Adapter, Capability, LoadedModel, ProbeItem


@dataclass
class ProbeResult:
    """What one probe returns for one checkpoint.

    ``record``: scalars describing the checkpoint (one row of the probe's ``records``).
    ``tables``: ``{table: [row dataclass, ...]}``; the runner adds the checkpoint's key, run,
    seed and step to every row. ``arrays``: large arrays (head maps) stored per checkpoint in
    ``arrays/<key>.npz`` as ``<probe>.<name>``, never in JSON. ``notes``: one-line remarks
    shown in the report (each once).
    """

    record: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[Any]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class RunReference:
    """State computed once per run at its reference checkpoint (e.g. heads identified in the
    final model) and given to the probes at every checkpoint of that run.

    ``arrays`` values are numpy arrays (saved with the cache, so a resumed probe reuses them);
    ``item_ids[i]`` names row ``i`` of every per-item array.
    """

    checkpoint_key: str
    item_ids: list[str]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def rows_for(self, item_ids: list[str]) -> np.ndarray:
        """int [len(item_ids)]: the row of each item in this reference, -1 where absent."""
        where = {k: i for i, k in enumerate(self.item_ids)}
        return np.array([where.get(k, -1) for k in item_ids], dtype=np.int64)


@dataclass
class ProbeContext:
    """Everything a probe may use for one checkpoint.

    ``memo`` is shared by the probes of one checkpoint (e.g. the saliency pass that flow, heads
    and ablation all read); ``references`` maps a reference name (``RunReference`` providers,
    see :attr:`Probe.reference`) to this run's reference state.
    """

    adapter: Adapter
    loaded: LoadedModel
    items: list[ProbeItem]
    memo: dict[str, Any] = field(default_factory=dict)
    references: dict[str, RunReference] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.loaded.checkpoint.key


class Probe(abc.ABC):
    """Base class of every probe. Subclasses set the class attributes and implement :meth:`run`.

    * ``name``: the registry name (``--probes NAME``).
    * ``needs``: capabilities the model must offer; otherwise the runner skips the probe with a note.
    * ``Options``: a dataclass, one ``#:`` comment per field; the CLI makes ``--field-name`` flags
      from it. Fields of the same name in several probes are one flag (same default required).
    * ``reference``: ``(name, fn)`` when the probe needs run-level state computed at the run's
      reference checkpoint: ``fn(ctx, options) -> RunReference``. Probes naming the same reference
      share one computation.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[Capability]] = frozenset()
    doc: ClassVar[str] = ""
    reference: ClassVar[tuple[str, Callable[..., RunReference]] | None] = None

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    def uses_reference(self) -> bool:
        """Whether this probe, with its options, needs the run's reference state."""
        return self.reference is not None

    @abc.abstractmethod
    def run(self, ctx: ProbeContext) -> ProbeResult:
        """Analyse one checkpoint."""


def rows_as_dicts(rows: list[Any]) -> list[dict[str, Any]]:
    """Rows (dataclasses or dicts) as plain dicts."""
    return [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in rows]
