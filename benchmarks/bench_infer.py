"""Chest X-ray inference latency: ONNX Runtime pipeline vs the same networks in torch eager.

One radiograph = decode (a 2048 x 2048 CR DICOM, 12-bit MONOCHROME1 with a VOI window)
-> pre-processing (``models.cxr.pipeline.CxrPipeline.pre_process``) -> the networks
(lung fields + lesions on the 256 grid, and the fine-grid nodule/mass map when
``cxr-nodule`` is installed) -> post-processing (findings in source pixels, JSON record).
The ONNX Runtime path is the production ``CxrPipeline``; the torch path runs the same
networks (``training.cxr.nets``, same weights) in eager mode between the *same*
pre/post-processing calls.  Both use the same number of CPU threads; the two paths are
interleaved per iteration so machine load affects both alike.

Models: the registry's ``cxr-lung``, ``cxr-lesions`` (and ``cxr-nodule``) with the ``weights.pt`` stored
next to each ``model.onnx`` (trained).  Without them (or with ``--random-init``) the
networks are exported here with random weights into a temporary registry: the latency
is the same, the findings are not meaningful (the results file says which).

Targets (issue 3): median <= 150 ms per radiograph on 2 CPU threads, >= 1.5x faster than
torch eager.  Results: ``benchmarks/results/bench_infer.json`` and ``.md``.

    python benchmarks/bench_infer.py [--n 50] [--threads 2] [--syntax explicit]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE_DCM = "cxr/samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
TARGET_MEDIAN_MS = 150.0
TARGET_SPEEDUP = 1.5
SYNTAXES = {"explicit": "1.2.840.10008.1.2.1", "jpegls": "1.2.840.10008.1.2.4.80",
            "j2k": "1.2.840.10008.1.2.4.90", "rle": "1.2.840.10008.1.2.5"}


# ---- test radiograph ---------------------------------------------------------------
def source_image(shared: Path) -> tuple[np.ndarray, str]:
    """A real radiograph (the shared CR sample) as float [0, 1], or a synthetic stand-in."""
    from models.imaging import load_radiograph

    path = shared / SAMPLE_DCM
    if path.is_file():
        return load_radiograph(path).pixels, f"upsampled real CR ({SAMPLE_DCM})"
    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    lungs = np.exp(-(((xx - 0.32) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)) + np.exp(
        -(((xx - 0.68) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    return np.clip(0.8 - 0.6 * lungs, 0, 1).astype(np.float32), "synthetic chest phantom (shared data absent)"


def make_cr_dicom(path: Path, size: int, shared: Path, syntax: str = "explicit") -> dict:
    """Write a ``size x size`` 12-bit MONOCHROME1 CR with a window and ImagerPixelSpacing."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels, origin = source_image(shared)
    big = np.asarray(Image.fromarray(pixels, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    stored = np.clip((1.0 - big) * 4095.0, 0, 4095).astype(np.uint16)  # MONOCHROME1: bright = low
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = "BENCH", "Bench^Radiograph"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.168 * 1024 / size] * 2
    ds.WindowCenter, ds.WindowWidth = 2048, 4000
    ds.PixelData = stored.tobytes()
    if syntax != "explicit":
        ds.compress(UID(SYNTAXES[syntax]))
    ds.save_as(path, enforce_file_format=True)
    return {"rows": size, "columns": size, "bits_stored": 12, "photometric": "MONOCHROME1",
            "transfer_syntax": syntax, "file_bytes": path.stat().st_size, "content": origin}


# ---- models ------------------------------------------------------------------------
def load_models(zoo: Path | None, random_init: bool, tmp: Path, size: int = 256):
    """Return (registry, lung torch module, lesion torch module, nodule torch module or None, provenance dict)."""
    import torch

    from models.card import ModelCard, sha256_file
    from models.cxr.pipeline import LESION_MODEL, LUNG_MODEL, NODULE_MODEL
    from models.errors import ModelError
    from models.registry import Registry
    from training.cxr.nets import CxrLesionNet, LungProbabilities, NoduleMap, lung_unet

    lung_net, lesion = lung_unet(), CxrLesionNet()
    if not random_init:
        reg = Registry([zoo]) if zoo else Registry()
        try:
            entries = {n: reg.get(n) for n in (LUNG_MODEL, LESION_MODEL)}
            weights = {n: e.directory / "weights.pt" for n, e in entries.items()}
            if all(p.is_file() for p in weights.values()):
                lung_net.load_state_dict(torch.load(weights[LUNG_MODEL], map_location="cpu"))
                lesion.load_state_dict(torch.load(weights[LESION_MODEL], map_location="cpu"))
                nodule = None
                if reg.versions(NODULE_MODEL):
                    entries[NODULE_MODEL] = reg.get(NODULE_MODEL)
                    fine = CxrLesionNet()
                    fine.load_state_dict(torch.load(entries[NODULE_MODEL].directory / "weights.pt", map_location="cpu"))
                    nodule = NoduleMap(fine).eval()
                prov = {n: {"version": e.card.version, "weights": "trained", "onnx": str(e.onnx_path)}
                        for n, e in entries.items()}
                return reg, LungProbabilities(lung_net).eval(), lesion.eval(), nodule, prov
        except ModelError:
            pass
    # random-init fallback: export the same architectures into a temporary registry
    torch.manual_seed(0)
    lung_net, lesion = lung_unet(), CxrLesionNet()
    lung_mod = LungProbabilities(lung_net).eval()
    lesion.eval()
    specs = [(LUNG_MODEL, lung_mod, ("lung",)), (LESION_MODEL, lesion, ("scores", "abnormality", "seg", "embedding"))]
    prov = {}
    for name, module, outputs in specs:
        folder = tmp / "zoo" / name / "0.0.0-bench"
        folder.mkdir(parents=True)
        onnx_path = folder / "model.onnx"
        torch.onnx.export(module, (torch.zeros(1, 1, size, size),), str(onnx_path), input_names=["image"],
                          output_names=list(outputs), dynamic_axes={"image": {0: "batch"}},
                          opset_version=17, dynamo=False)
        ModelCard(name=name, version="0.0.0-bench", task="benchmark", input={"name": "image", "size": size,
                  "channels": 1, "normalisation": "models.cxr.preprocess.prepare"},
                  outputs={o: "" for o in outputs}, classes=["lung"] if name == LUNG_MODEL else
                  ["nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion", "pneumothorax"],
                  thresholds={}, training_data="random initialisation (latency benchmark only)",
                  sha256=sha256_file(onnx_path), extra={"seg_threshold": 0.5}).save(folder / "card.json")
        prov[name] = {"version": "0.0.0-bench", "weights": "random-init (trained model not found)", "onnx": str(onnx_path)}
    return Registry([tmp / "zoo"]), lung_mod, lesion, None, prov


# ---- one radiograph ----------------------------------------------------------------
def run_once(pipe, predict, path: Path) -> tuple[dict[str, float], dict]:
    """Decode -> pre -> predict -> post for one file; returns stage times (ms) and the JSON record."""
    from models.cxr.postprocess import MIN_LUNG_FRACTION, lung_fraction
    from models.imaging import frontal_chest_skip_reason, load_radiograph

    c0 = time.process_time()
    t0 = time.perf_counter()
    radiograph = load_radiograph(path)
    assert frontal_chest_skip_reason(radiograph) is None
    t1 = time.perf_counter()
    prepared = pipe.pre_process(radiograph)
    t2 = time.perf_counter()
    raw = predict(prepared)
    t3 = time.perf_counter()
    record = {"skipped": None, "abnormality": raw.abnormality, "findings": []}
    if lung_fraction(raw.lung, prepared.content) < MIN_LUNG_FRACTION:
        record["skipped"] = "no lung fields found"
    else:
        result = pipe.post_process(prepared, raw)
        record["findings"] = [f.to_dict() for f in result.findings]
        json.dumps(record)
    t4 = time.perf_counter()
    # process CPU time (all threads): robust to other processes' load, but counts thread spinning
    cpu = time.process_time() - c0
    ms = {"decode": t1 - t0, "pre": t2 - t1, "predict": t3 - t2, "post": t4 - t3, "total": t4 - t0, "cpu_total": cpu}
    return {k: 1000.0 * v for k, v in ms.items()}, record


def torch_predictor(lung_mod, lesion, nodule=None):
    import torch

    from models.cxr.pipeline import Raw

    def predict(prepared):
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(prepared.tensor, dtype=np.float32))
            lung = lung_mod(x)[0, 0].numpy()
            scores, abn, seg, emb = lesion(x)
            fine = None
            if nodule is not None:
                fine = nodule(torch.from_numpy(np.ascontiguousarray(prepared.fine, dtype=np.float32)))[0, 0].numpy()
            return Raw(lung, scores[0].numpy(), float(abn[0, 0]), seg[0].numpy(), emb[0].numpy(), fine)
    return predict


def summarise(samples: list[dict[str, float]]) -> dict:
    out = {}
    for key in samples[0]:
        v = np.array([s[key] for s in samples])
        out[key] = {"median_ms": round(float(np.median(v)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2),
                    "mean_ms": round(float(v.mean()), 2), "min_ms": round(float(v.min()), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="timed radiographs per path")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both ORT (intra-op) and torch")
    ap.add_argument("--size", type=int, default=2048, help="side of the generated CR")
    ap.add_argument("--syntax", choices=sorted(SYNTAXES), default="explicit", help="transfer syntax of the CR")
    ap.add_argument("--zoo", type=Path, default=None, help="registry directory (default: models/zoo + MEDWS_MODELS_DIR)")
    ap.add_argument("--random-init", action="store_true", help="benchmark untrained networks (latency only)")
    ap.add_argument("--no-nodule", action="store_true", help="leave out cxr-nodule (the 256-grid networks only)")
    ap.add_argument("--shared-data", type=Path, default=Path(os.environ.get("MEDWS_SHARED_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--name", default="bench_infer")
    ap.add_argument("--processes", type=int, default=3,
                    help="independent processes, each timing --n radiographs per path (the speed of torch's "
                         "thread pool varies from one process to the next; the summary pools them)")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is None and args.processes > 1:
        return _parent(args, list(argv if argv is not None else sys.argv[1:]))

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from models.cxr.pipeline import CxrPipeline

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        dcm = tmp / "cr.dcm"
        image_info = make_cr_dicom(dcm, args.size, args.shared_data, args.syntax)
        registry, lung_mod, lesion, nodule, provenance = load_models(args.zoo, args.random_init, tmp)
        if args.no_nodule:
            nodule = None
            provenance.pop("cxr-nodule", None)
        pipe = CxrPipeline(registry=registry, threads=args.threads, nodule_version=None if nodule else "none")
        paths = {"onnxruntime": pipe.predict, "torch_eager": torch_predictor(lung_mod, lesion, nodule)}
        records = {}
        for name, predict in paths.items():
            for _ in range(args.warmup):
                _, records[name] = run_once(pipe, predict, dcm)
        samples: dict[str, list] = {k: [] for k in paths}
        load_before = os.getloadavg()
        busy0, own0, wall0 = _system_busy_s(), _own_cpu_s(), time.perf_counter()
        for i in range(args.n):
            order = list(paths) if i % 2 == 0 else list(paths)[::-1]
            for name in order:
                ms, _ = run_once(pipe, paths[name], dcm)
                samples[name].append(ms)
        load_after = os.getloadavg()
        other_share = _other_share(busy0, own0, wall0)
        providers = pipe.lesion.providers
        ort_layout = {"networks_concurrent": pipe.concurrent, "intra_op_threads_per_network": pipe.lesion.threads,
                      "fine_nodule_network": pipe.nodule is not None}

    if args.child is not None:  # one of --processes: the raw samples go to the parent
        args.child.write_text(json.dumps({
            "samples": samples, "image": image_info, "models": provenance, "ort_providers": providers,
            "ort_layout": ort_layout, "findings_last_run": {k: len(r["findings"]) for k, r in records.items()},
            "loadavg": [load_before, load_after], "other_share": other_share}))
        return 0
    result = _result(args, samples, image_info, provenance, providers, ort_layout,
                     {k: len(r["findings"]) for k, r in records.items()}, load_before, load_after, other_share)
    _write(args, result)
    return 0


def _parent(args, argv: list[str]) -> int:
    """Run ``--processes`` child processes one after the other and pool their samples."""
    import subprocess

    keep = []
    skip = False
    for a in argv:  # the child gets the same options, one process each
        if skip:
            skip = False
            continue
        if a == "--processes":
            skip = True
            continue
        if not a.startswith("--processes="):
            keep.append(a)
    children = []
    with tempfile.TemporaryDirectory() as tmp_s:
        for i in range(args.processes):
            out = Path(tmp_s) / f"child{i}.json"
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *keep, "--child", str(out)], check=True)
            children.append(json.loads(out.read_text()))
    samples = {k: [s for c in children for s in c["samples"][k]] for k in children[0]["samples"]}
    first = children[0]
    shares = [c["other_share"] for c in children if c["other_share"] is not None]
    result = _result(args, samples, first["image"], first["models"], first["ort_providers"], first["ort_layout"],
                     first["findings_last_run"], children[0]["loadavg"][0], children[-1]["loadavg"][1],
                     max(shares) if shares else None)
    per = []
    for c in children:
        st = {k: summarise(v) for k, v in c["samples"].items()}
        per.append({"onnxruntime_ms": st["onnxruntime"]["total"]["median_ms"],
                    "torch_eager_ms": st["torch_eager"]["total"]["median_ms"],
                    "speedup": round(st["torch_eager"]["total"]["median_ms"] / st["onnxruntime"]["total"]["median_ms"], 3),
                    "network_speedup": round(st["torch_eager"]["predict"]["median_ms"]
                                             / st["onnxruntime"]["predict"]["median_ms"], 3)})
    result["processes"] = per
    _write(args, result)
    return 0


def _write(args, result: dict) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result) + "\n")
    print(markdown(result))


def _result(args, samples, image_info, provenance, providers, ort_layout, findings, load_before, load_after,
            other_share) -> dict:
    import onnxruntime as ort
    import torch

    stats = {k: summarise(v) for k, v in samples.items()}
    med_ort, med_torch = stats["onnxruntime"]["total"]["median_ms"], stats["torch_eager"]["total"]["median_ms"]
    speedup = round(med_torch / med_ort, 3)
    net_ort = stats["onnxruntime"]["predict"]["median_ms"]
    net_torch = stats["torch_eager"]["predict"]["median_ms"]
    net_speedup = round(net_torch / net_ort, 3)
    result = {
        "benchmark": "chest X-ray inference latency per radiograph (decode -> pre -> networks -> post)",
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "n": args.n, "warmup": args.warmup, "threads": args.threads,
        "image": image_info, "models": provenance, "ort_providers": providers, "ort_layout": ort_layout,
        "stats": stats, "speedup_vs_torch_median": speedup, "network_speedup_vs_torch_median": net_speedup,
        "targets": {"median_ms_max": TARGET_MEDIAN_MS, "speedup_min": TARGET_SPEEDUP},
        "meets_targets": {"median": med_ort <= TARGET_MEDIAN_MS, "speedup": speedup >= TARGET_SPEEDUP},
        "findings_last_run": findings, "n_total": len(samples["onnxruntime"]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after],
                    "other_processes_cpu_share": other_share, "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "torch": torch.__version__, "numpy": np.__version__},
    }
    return result


def markdown(r: dict) -> str:
    lines = [f"# Chest X-ray inference latency ({r['date']})", "",
             f"{r['image']['rows']}x{r['image']['columns']} CR DICOM ({r['image']['transfer_syntax']}, "
             f"{r['image']['photometric']}, {r['image']['content']}); {r['threads']} CPU threads; "
             + (f"{len(r['processes'])} processes one after the other, n={r['n']} radiographs per path in each "
                f"({r['n_total']} pooled)" if r.get("processes") else f"n={r['n']}")
             + f" after {r['warmup']} warm-up runs; ORT providers {r['ort_providers']}"
             + (_layout_text(r) if r.get("ort_layout", {}).get("networks_concurrent") else "") + ".", "",
             "Models: " + "; ".join(f"{k} {v['version']} ({v['weights']})" for k, v in r["models"].items()), "",
             "| path | decode | pre | networks | post | total median | total p95 | total min | CPU time median |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["stats"].items():
        lines.append(f"| {name} | {s['decode']['median_ms']} | {s['pre']['median_ms']} | {s['predict']['median_ms']} | "
                     f"{s['post']['median_ms']} | **{s['total']['median_ms']} ms** | {s['total']['p95_ms']} ms | "
                     f"{s['total']['min_ms']} ms | {s['cpu_total']['median_ms']} ms |")
    m = r["meets_targets"]
    if r.get("processes"):
        lines += ["", "| process | ONNX Runtime median | torch eager median | speed-up | networks only |",
                  "|---|---|---|---|---|"]
        lines += [f"| {i + 1} | {p['onnxruntime_ms']} ms | {p['torch_eager_ms']} ms | {p['speedup']}x | "
                  f"{p['network_speedup']}x |" for i, p in enumerate(r["processes"])]
    lines += ["", f"Speed-up of ONNX Runtime over torch eager (median total{', pooled' if r.get('processes') else ''}): "
              f"**{r['speedup_vs_torch_median']}x**; "
              f"networks stage alone: **{r['network_speedup_vs_torch_median']}x** (decode, pre and post are the same numpy code on both paths).",
              (f"Targets: median <= {r['targets']['median_ms_max']:g} ms: {'met' if m['median'] else 'NOT met'}; "
               f">= {r['targets']['speedup_min']:g}x torch: {'met' if m['speedup'] else 'NOT met'}."
               if not _load_warning(r) else "Targets: not assessed (taken under load, see below)."),
              f"Machine: {r['machine']['cpu_count']} CPUs (shared), load average {r['machine']['loadavg_before']} -> "
              f"{r['machine']['loadavg_after']}; onnxruntime {r['machine']['onnxruntime']}, torch {r['machine']['torch']}.",
              *(_load_warning(r)),
              "Stage times are wall-clock medians in ms; 'CPU time' is the process CPU time per radiograph "
              "(all threads, including ONNX Runtime/OpenMP spin-waiting), which other processes' load does "
              "not inflate. Written by benchmarks/bench_infer.py."]
    return "\n".join(lines)


def _layout_text(r: dict) -> str:
    per = r["ort_layout"]["intra_op_threads_per_network"]
    if r["ort_layout"].get("fine_nodule_network"):
        return (f"; ORT path: the lung and lesion networks at the same time, {per} intra-op thread(s) each, then the "
                f"512-grid nodule network with {r['threads']}; torch path: the three one after the other, {r['threads']} threads")
    return (f"; ORT path: the two networks run at the same time, {per} intra-op thread(s) each; "
            f"torch path: one after the other, {r['threads']} threads")


def _system_busy_s() -> float:
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _own_cpu_s() -> float:
    t = os.times()
    return float(t.user + t.system)


def _other_share(busy0: float, own0: float, wall0: float) -> float | None:
    """Share of all CPUs used by *other* processes during the timed loop (0 = quiet machine)."""
    try:
        busy = _system_busy_s() - busy0
    except ImportError:
        return None
    own = _own_cpu_s() - own0
    wall = time.perf_counter() - wall0
    return round(max(busy - own, 0.0) / (wall * (os.cpu_count() or 1)), 3)


OTHER_SHARE_MAX = 0.2


def _load_warning(r: dict) -> list[str]:
    """A caveat line when other processes kept the CPUs busy during the timed loop.

    The load average counts this benchmark's own threads too, so the test uses the CPU time
    of the other processes (system busy time minus this process's, over the loop); runs
    written before that field existed fall back to the load average.
    """
    m = r["machine"]
    share = m.get("other_processes_cpu_share")
    if share is not None:
        if share <= OTHER_SHARE_MAX:
            return []
        what = f"other processes used {share:.0%} of the {m['cpu_count']} CPUs during the timed loop"
    else:
        load = max(m["loadavg_before"][0], m["loadavg_after"][0])
        if load <= 0.75 * (m["cpu_count"] or 1):
            return []
        what = f"1-min load average up to {load:g} on {m['cpu_count']} CPUs"
    return [f"**Taken under load** ({what}): the multi-threaded paths wait for cores (torch's OpenMP "
            "threads most), so the timings and the speed-up are not representative; rerun on a quiet machine."]


if __name__ == "__main__":
    sys.exit(main())
