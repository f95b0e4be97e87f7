"""Second-stage nodule candidate model: candidate features (Hessian shape, intensity,
attachment, lung-wall distance, pass, network logit; :mod:`models.ct.candidate_features`)
→ logistic regression whose logit is added to the FPR network's.

``python -m training.ct.second_stage collect --out /tmp/ct_runs/stage2``: runs the runtime
pipeline (candidates, network with test-time flips, features) on
- FIT cases: nodules inserted with seeds 40000+ into the TRAINING region (slices < 100 of
  the crop) as reconstructed, at 3 mm and 2 mm isotropic... (``--kinds``), and
- VALIDATION cases: exactly the cases :func:`training.ct.evaluate_nodules.choose_threshold`
  uses (seeds 5000+, training region as reconstructed and at 3 mm),
and saves features and hit labels (``fit.npz``, ``val.npz``).  Never the held-out sets.

``python -m training.ct.second_stage fit --out /tmp/ct_runs/stage2``: fits logistic
regressions and small ReLU networks on the FIT candidates (classes balanced), keeps the one
with the highest validation CPM on its own, reports the validation FROC of the network
alone and of network + second stage, and writes ``second_stage.json`` for
``evaluate_nodules --second-stage``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from models.ct.candidate_features import CNN_FEATURES, FEATURE_NAMES, SecondStage, fit_logistic
from training.ct.froc import froc

logger = logging.getLogger(__name__)
FIT_SEED0 = 40000
VAL_SEED0 = 5000


def collect_cases(pipe, lv, seeds, n_nodules: int) -> dict:
    """Features, hit lesion ids (0 = none) and case index of every candidate of the cases."""
    from training.ct.data import nodule_case
    from training.ct.evaluate_nodules import candidate_hits, labels_on_work

    feats, hits, case = [], [], []
    n_les = 0
    for k, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        vol, labels, specs = nodule_case(lv, rng, n_nodules=n_nodules)
        x = pipe.pre_process(vol)
        _, f = pipe.predict_parts(x, features=True)
        labels = labels_on_work(labels, vol, x.work)
        h = candidate_hits(x, labels, specs)
        feats.append(f)
        hits.append(np.array([0 if v is None else v for v in h], np.int32))
        case.append(np.full(len(h), k, np.int32))
        n_les += len(specs)
    return {"feats": np.concatenate(feats), "hits": np.concatenate(hits), "case": np.concatenate(case),
            "n_cases": len(seeds), "n_lesions": n_les}


def froc_of(scores: np.ndarray, d) -> dict:
    cases = [[] for _ in range(int(d["n_cases"]))]
    for s, h, c in zip(scores, d["hits"], d["case"]):
        cases[int(c)].append((float(s), int(h) if h else None))
    return froc(cases, int(d["n_lesions"]), int(d["n_cases"]))


def collect(out: Path, kinds: list[str], n_fit: int, n_val: int) -> None:
    from models.ct.nodules import NodulePipeline
    from models.registry import Registry
    from training.ct.data import LungVolume, nodule_volumes
    from training.ct.fpr_data import lowres_copy, smooth_copy, thick_copy

    model, card = Registry().load("ct-nodule-fpr", version="1.1.0", threads=1)
    pipe = NodulePipeline(model=model, threshold=0.5)
    tr = nodule_volumes()["train"]
    make = {"sharp": lambda v: v, "lowres3mm": lowres_copy, "lowres2mm": lambda v: lowres_copy(v, 2.0),
            "thick3mm": thick_copy, "smooth": lambda v: smooth_copy(v, 1.2, 15.0)}
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    if not (out / "val.npz").exists():  # the validation cases of evaluate_nodules.choose_threshold
        parts = [collect_cases(pipe, lv, range(VAL_SEED0, VAL_SEED0 + n_val), 2)
                 for lv in (tr, LungVolume(lowres_copy(tr.vol), tr.lungs))]
        np.savez(out / "val.npz", **merge(parts))
        logger.info("val collected %.0f s", time.time() - t)
    for i, kind in enumerate(kinds):
        f = out / f"fit_{kind}.npz"
        if f.exists():
            continue
        lv = LungVolume(make[kind](tr.vol), tr.lungs)
        seeds = range(FIT_SEED0 + 1000 * i, FIT_SEED0 + 1000 * i + n_fit)
        np.savez(f, **collect_cases(pipe, lv, seeds, 3))
        logger.info("fit %s collected %.0f s", kind, time.time() - t)


def merge(parts: list[dict]) -> dict:
    off = 0
    out = {"feats": [], "hits": [], "case": []}
    for p in parts:
        out["feats"].append(p["feats"])
        out["hits"].append(p["hits"])
        out["case"].append(np.asarray(p["case"]) + off)
        off += int(p["n_cases"])
    return {"feats": np.concatenate(out["feats"]), "hits": np.concatenate(out["hits"]),
            "case": np.concatenate(out["case"]), "n_cases": off,
            "n_lesions": sum(int(p["n_lesions"]) for p in parts)}


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int, weight_decay: float, epochs: int = 500,
            seed: int = 0) -> SecondStage:
    """Two ReLU layers of ``hidden`` units (torch, full batch, AdamW, positives weighted to
    balance the classes) on standardised ``x``; returned as numpy layers."""
    import torch

    torch.manual_seed(seed)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mean) / scale, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=weight_decay)
    pw = torch.tensor(float((1 - y.mean()) / max(y.mean(), 1e-6)))
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt)[:, 0], yt, pos_weight=pw)
        loss.backward()
        opt.step()
    layers = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
              for m in net if isinstance(m, torch.nn.Linear)]
    return SecondStage((), mean.astype(np.float32), scale.astype(np.float32), layers)


CONFIGS = ({"kind": "logistic", "l2": 1.0}, {"kind": "logistic", "l2": 30.0},
           {"kind": "mlp", "hidden": 16, "weight_decay": 1e-2}, {"kind": "mlp", "hidden": 32, "weight_decay": 1e-2},
           {"kind": "mlp", "hidden": 64, "weight_decay": 1e-2})


def fit(out: Path, configs=CONFIGS) -> dict:
    """Fit every config on the FIT candidates; keep the one with the highest validation CPM
    of the second stage ALONE (the network's own validation score is inflated: it learnt
    these very negatives, so a combined validation score would always favour it)."""
    import dataclasses

    fit_d = merge([dict(np.load(f)) for f in sorted(out.glob("fit_*.npz"))])
    val = dict(np.load(out / "val.npz"))
    names = tuple(n for n in FEATURE_NAMES if n not in CNN_FEATURES)
    idx = [FEATURE_NAMES.index(n) for n in names]
    y = (fit_d["hits"] > 0).astype(float)
    cnn = val["feats"][:, FEATURE_NAMES.index("cnn_logit")]
    tried = []
    best = None
    for cfg in configs:
        if cfg["kind"] == "logistic":
            mean, scale, w, b = fit_logistic(fit_d["feats"][:, idx], y, l2=cfg["l2"])
            st = SecondStage(names, mean, scale, [(w[None], np.array([b], np.float32))])
        else:
            st = dataclasses.replace(fit_mlp(fit_d["feats"][:, idx], y, cfg["hidden"], cfg["weight_decay"]),
                                     features=names)
        row = {**cfg, "validation_alone": froc_of(st.logit(val["feats"]), val),
               "validation_combined": froc_of(st.combined_logit(val["feats"]), val)}
        logger.info("%s alone %.3f combined %.3f", cfg, row["validation_alone"]["cpm"], row["validation_combined"]["cpm"])
        tried.append(row)
        if best is None or row["validation_alone"]["cpm"] > best[0]["validation_alone"]["cpm"]:
            best = (row, st)
    res = {"fit_candidates": int(len(y)), "fit_positive_candidates": int(y.sum()),
           "fit_cases": int(fit_d["n_cases"]), "fit_seeds": f"{FIT_SEED0}+ (training region)",
           "fit_sources": [f.stem[4:] for f in sorted(out.glob("fit_*.npz"))],
           "validation_cases": int(val["n_cases"]), "validation_network_alone": froc_of(cnn, val),
           "chosen": {k: v for k, v in best[0].items()}, "tried": tried,
           "selection": "highest validation CPM of the second stage alone (training-region validation cases)",
           "second_stage": best[1].to_dict()}
    (out / "second_stage.json").write_text(json.dumps(res, indent=1))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("collect", "fit"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--kinds", default="sharp,lowres3mm,thick3mm,smooth")
    ap.add_argument("--n-fit", type=int, default=12, help="fit cases per reconstruction")
    ap.add_argument("--n-val", type=int, default=10, help="validation cases per reconstruction (as choose_threshold)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(a.out)
    if a.cmd == "collect":
        collect(out, a.kinds.split(","), a.n_fit, a.n_val)
    else:
        res = fit(out)
        print(json.dumps({k: res[k] for k in ("fit_candidates", "fit_positive_candidates", "fit_sources",
                                              "validation_network_alone", "chosen")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
