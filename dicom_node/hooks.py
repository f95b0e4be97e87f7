"""What happens when a study becomes stable, for ``node serve`` and ``demo``.

:func:`stable_hooks` is the one place that lists the hooks; each is a callable
``hook(study: StableStudy, db: Database) -> None``.  The default queues an
``analyze`` job; the analysis integration adds its in-process runner here.
"""
from __future__ import annotations

from dicom_node.config import NodeConfig
from dicom_node.stability import StableHook


def stable_hooks(config: NodeConfig) -> list[StableHook]:
    """Hooks run for each newly stable study: queue analysis with the study's PACS
    priority and wake this process's analysis workers (:mod:`dicom_node.analysis`)."""
    from dicom_node.analysis import enqueue_prioritized

    return [enqueue_prioritized]
