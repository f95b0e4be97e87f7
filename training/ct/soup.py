"""Weight-average served nodule classifiers of one fine-tuning lineage into a training
output folder that ``evaluate_nodules --ckpt`` reads (model.pt, train_info.json,
lineage.json). Each ONNX is recovered with ``networks.fpr_cnn_from_onnx`` (batch norms
folded), so the weights are averaged in one parametrisation.

    python -m training.ct.soup --onnx models/zoo/ct-nodule-fpr/1.6.0/model.onnx \\
        /tmp/zoo170/ct-nodule-fpr/1.7.0/model.onnx --card models/zoo/ct-nodule-fpr/1.6.0/card.json \\
        --out /tmp/ct_runs/soupS2
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training.ct.networks import fpr_cnn_from_onnx, weight_average


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", nargs="+", required=True, help="exported classifiers of one lineage")
    ap.add_argument("--card", required=True, help="card whose extra.training (data settings) the soup keeps")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weight_average([fpr_cnn_from_onnx(p) for p in a.onnx]), out / "model.pt")
    card = json.loads(Path(a.card).read_text())
    keep = {k: v for k, v in card["extra"].get("training", {}).items()
            if k not in ("iterations", "wall_s", "final_loss")}
    info = {"soup": {"members": a.onnx, "method": "uniform average of the folded weights "
                                                  "(networks.fpr_cnn_from_onnx of each ONNX)"}, **keep}
    (out / "train_info.json").write_text(json.dumps(info, indent=1))
    (out / "lineage.json").write_text(json.dumps({"soup_of": a.onnx, "card": a.card}, indent=1))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
