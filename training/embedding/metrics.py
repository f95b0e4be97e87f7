"""Retrieval metrics (numpy): precision@k and mean average precision where an item is
relevant to a query when their label sets share a label; items of the query's own
group (same patient / same source image) are left out of its ranking."""
from __future__ import annotations

import numpy as np


def retrieval_metrics(emb: np.ndarray, labels: np.ndarray, groups: list[str], k: int = 10,
                      query_mask: np.ndarray | None = None) -> dict[str, float]:
    """``precision_at_k``, ``map`` and the chance level (fraction of relevant items)."""
    emb = np.asarray(emb, np.float32)
    labels = np.asarray(labels, np.float32)
    g = np.asarray(groups)
    sims = emb @ emb.T
    rel_all = (labels @ labels.T) > 0
    p_at_k, aps, chance = [], [], []
    queries = np.arange(len(emb)) if query_mask is None else np.flatnonzero(query_mask)
    for q in queries:
        keep = g != g[q]
        order = np.argsort(-sims[q][keep], kind="stable")
        rel = rel_all[q][keep][order]
        if rel.sum() == 0:
            continue
        p_at_k.append(rel[:k].mean())
        hits = np.cumsum(rel)
        aps.append(float((hits[rel] / (np.flatnonzero(rel) + 1)).mean()))
        chance.append(rel.mean())
    if not aps:
        return {"precision_at_k": None, "map": None, "chance": None, "queries": 0, "k": k}
    return {"precision_at_k": float(np.mean(p_at_k)), "map": float(np.mean(aps)),
            "chance": float(np.mean(chance)), "queries": len(aps), "k": k}


def pixel_baseline(images: np.ndarray, size: int = 16) -> np.ndarray:
    """Reference embedding: the model grid block-averaged to ``size`` x ``size``, centred, L2-normalised."""
    n, s, _ = images.shape
    f = s // size
    x = images[:, : f * size, : f * size].astype(np.float32).reshape(n, size, f, size, f).mean(axis=(2, 4))
    x = x.reshape(n, -1)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
